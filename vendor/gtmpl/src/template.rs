use std::collections::HashMap;

use crate::error::{ParseError, TemplateError};
use crate::funcs::BUILTINS;
use crate::node::{Nodes, PipeOrString};
use crate::parse::{parse_with_max_depth, Tree};

use gtmpl_value::Func;

/// The main template structure.
pub struct Template {
    pub name: String,
    pub text: String,
    pub funcs: HashMap<String, Func>,
    pub tree_set: HashMap<String, Tree>,
    /// Most nested control structures and parenthesized pipelines `parse` accepts
    /// ([`crate::parse::MAX_PARSE_DEPTH`] by default).
    pub max_parse_depth: usize,
}

impl Default for Template {
    fn default() -> Template {
        Template {
            name: String::default(),
            text: String::from(""),
            funcs: BUILTINS.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
            tree_set: HashMap::default(),
            max_parse_depth: crate::parse::MAX_PARSE_DEPTH,
        }
    }
}

impl Template {
    /// Creates a new empty template with a given `name`.
    pub fn with_name<T: Into<String>>(name: T) -> Template {
        Template {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a single custom function to the template.
    ///
    /// ## Example
    ///
    /// ```rust
    /// use gtmpl::{Context, Func, FuncError, Value};
    ///
    /// fn hello_world(_args: &[Value]) -> Result<Value, FuncError> {
    ///   Ok(Value::from("Hello World!"))
    /// }
    ///
    /// let mut tmpl = gtmpl::Template::default();
    /// tmpl.add_func("helloWorld", hello_world);
    /// tmpl.parse("{{ helloWorld }}").unwrap();
    /// let output = tmpl.render(&Context::empty());
    /// assert_eq!(&output.unwrap(), "Hello World!");
    /// ```
    pub fn add_func(&mut self, name: &str, func: Func) {
        self.funcs.insert(name.to_owned(), func);
    }

    /// Adds custom functions to the template.
    ///
    /// ## Example
    ///
    /// ```rust
    /// use std::collections::HashMap;
    ///
    /// use gtmpl::{Context, Func, FuncError, Value};
    ///
    /// fn hello_world(_args: &[Value]) -> Result<Value, FuncError> {
    ///   Ok(Value::from("Hello World!"))
    /// }
    ///
    /// let funcs = vec![("helloWorld", hello_world as Func)];
    /// let mut tmpl = gtmpl::Template::default();
    /// tmpl.add_funcs(&funcs);
    /// tmpl.parse("{{ helloWorld }}").unwrap();
    /// let output = tmpl.render(&Context::empty());
    /// assert_eq!(&output.unwrap(), "Hello World!");
    /// ```
    pub fn add_funcs<T: Into<String> + Clone>(&mut self, funcs: &[(T, Func)]) {
        self.funcs
            .extend(funcs.iter().cloned().map(|(k, v)| (k.into(), v)));
    }

    /// Parse the given `text` as template body.
    ///
    /// ## Example
    ///
    /// ```rust
    /// let mut tmpl = gtmpl::Template::default();
    /// tmpl.parse("Hello World!").unwrap();
    /// ```
    pub fn parse<T: Into<String>>(&mut self, text: T) -> Result<(), ParseError> {
        let tree_set = parse_with_max_depth(
            self.name.clone(),
            text.into(),
            self.funcs.keys().cloned().collect(),
            self.max_parse_depth,
        )?;
        self.tree_set.extend(tree_set);
        Ok(())
    }

    /// Add the given `text` as a template with a `name`.
    ///
    /// ## Example
    ///
    /// ```rust
    /// use gtmpl::Context;
    ///
    /// let mut tmpl = gtmpl::Template::default();
    /// tmpl.add_template("fancy", "{{ . }}");
    /// tmpl.parse(r#"{{ template "fancy" . }}!"#).unwrap();
    /// let output = tmpl.render(&Context::from("Hello World"));
    /// assert_eq!(&output.unwrap(), "Hello World!");
    /// ```
    pub fn add_template<N: Into<String>, T: Into<String>>(
        &mut self,
        name: N,
        text: T,
    ) -> Result<(), TemplateError> {
        let tree_set = parse_with_max_depth(
            name.into(),
            text.into(),
            self.funcs.keys().cloned().collect(),
            self.max_parse_depth,
        )?;
        self.tree_set.extend(tree_set);
        Ok(())
    }
}

#[cfg(test)]
mod tests_mocked {
    use super::*;

    #[test]
    fn test_parse() {
        let mut t = Template::with_name("foo");
        assert!(t.parse(r#"{{ if eq "bar" "bar" }} 2000 {{ end }}"#).is_ok());
        assert!(t.tree_set.contains_key("foo"));
    }
}

/// Names of the templates a tree calls by name at its top level, outside any `if`, `with`
/// or `range`: the calls every execution of the tree makes (added by Lookout).
fn unconditional_calls(tree: &Tree) -> Vec<&str> {
    let mut out = Vec::new();
    let mut pending: Vec<&Nodes> = tree.root.iter().collect();
    while let Some(node) = pending.pop() {
        match node {
            Nodes::List(list) => pending.extend(list.nodes.iter()),
            Nodes::Template(t) => {
                if let PipeOrString::String(name) = &t.name {
                    out.push(name.as_str());
                }
            }
            _ => {}
        }
    }
    out
}

impl Template {
    /// A template that, once executed, always calls itself again (directly or through other
    /// templates, by calls outside any `if`, `with` or `range`), reachable from this
    /// template: its name. Executing such a template can only end at the depth limit.
    /// Added by Lookout, so that a rule checker can refuse it before it runs.
    pub fn unconditional_recursion(&self) -> Option<String> {
        // Depth-first search over the graph of unconditional calls; a template on the
        // current path that is called again closes a cycle.
        let mut on_path: Vec<&str> = Vec::new();
        let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut stack: Vec<(&str, Vec<&str>)> = Vec::new();
        let start = self.name.as_str();
        let calls = |name: &str| {
            self.tree_set
                .get(name)
                .map(unconditional_calls)
                .unwrap_or_default()
        };
        stack.push((start, calls(start)));
        on_path.push(start);
        while let Some((_, next)) = stack.last_mut() {
            match next.pop() {
                Some(callee) if on_path.contains(&callee) => return Some(callee.to_string()),
                Some(callee) if done.contains(callee) => {}
                Some(callee) => {
                    let callee_calls = calls(callee);
                    stack.push((callee, callee_calls));
                    on_path.push(callee);
                }
                None => {
                    if let Some((name, _)) = stack.pop() {
                        done.insert(name);
                    }
                    on_path.pop();
                }
            }
        }
        None
    }
}
