//! CEL expressions of `fail_if_body_json_matches_cel` and `fail_if_body_json_not_matches_cel`,
//! compiled once while the configuration is decoded, as blackbox_exporter compiles them.
//!
//! blackbox_exporter (cel-go) declares one variable, `body`, of dynamic type: an expression
//! that does not parse is a configuration error; one whose result is not a boolean fails the
//! probe when evaluated. The same here, with bounds blackbox_exporter does not have, checked
//! before the `cel` crate's recursive parser sees the text:
//!
//! * at most [`MAX_EXPRESSION_BYTES`] bytes;
//! * brackets (`(`, `[`, `{`) and conditionals (`?`) nested at most [`MAX_NESTING`] deep;
//! * after parsing, a syntax tree at most [`MAX_TREE_DEPTH`] deep (long chains such as
//!   `a + a + … + a` are deep trees), so that evaluating it recurses a bounded depth;
//! * message (struct) literals, which the crate cannot evaluate, are refused.
//!
//! Every comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) is rewritten so that
//! each iteration first calls [`TICK`], which the evaluator (`prober/http/cel.rs`) binds to
//! its deadline check, and so that its range passes through [`ITERABLE`], which refuses a
//! range that is neither a list nor a map (the crate would panic on it). Neither name can
//! be written in CEL source.

use std::sync::Arc;

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr};

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest nesting of brackets and conditionals accepted in the source text.
pub const MAX_NESTING: usize = 32;
/// Deepest syntax tree accepted after parsing.
pub const MAX_TREE_DEPTH: usize = 64;
/// The function every comprehension iteration calls first, with the loop condition.
pub const TICK: &str = "@lookout_tick";
/// The function a comprehension's range passes through.
pub const ITERABLE: &str = "@lookout_iterable";

/// Stack of the thread that parses: the parser and its parse tree recurse about once per
/// operator of a chain, and the text is at most [`MAX_EXPRESSION_BYTES`] long.
const PARSE_STACK_BYTES: usize = 16 << 20;

/// A compiled, rewritten CEL expression and its source text.
#[derive(Clone)]
pub struct CelProgram {
    source: Arc<str>,
    expr: Arc<IdedExpr>,
}

impl std::fmt::Debug for CelProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CelProgram").field(&self.source).finish()
    }
}

impl CelProgram {
    /// Checks the bounds, parses and rewrites `source`; the error says what is wrong.
    pub fn compile(source: &str) -> Result<CelProgram, String> {
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "CEL expression is {} bytes long, more than the {MAX_EXPRESSION_BYTES} allowed",
                source.len()
            ));
        }
        let nesting = text_nesting(source);
        if nesting > MAX_NESTING {
            return Err(format!(
                "CEL expression nests brackets and conditionals {nesting} deep, more than the \
                 {MAX_NESTING} allowed"
            ));
        }
        let owned = source.to_owned();
        let parsed = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("cel-parse".into())
                .stack_size(PARSE_STACK_BYTES)
                .spawn_scoped(s, move || parse(&owned))
                .map_err(|e| format!("cannot start the CEL parser thread: {e}"))?
                .join()
                .unwrap_or_else(|_| Err("the CEL parser failed".into()))
        })?;
        Ok(CelProgram {
            source: source.into(),
            expr: Arc::new(parsed),
        })
    }

    /// The expression as written in the configuration.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The rewritten syntax tree (see the module documentation).
    pub fn expr(&self) -> &IdedExpr {
        &self.expr
    }
}

/// Parses, checks the tree and rewrites it (on the parser thread, where a refused deep tree
/// is also dropped).
fn parse(source: &str) -> Result<IdedExpr, String> {
    let mut expr = cel::parser::Parser::new()
        .max_recursion_depth(MAX_TREE_DEPTH as u16)
        .parse(source)
        .map_err(|e| format!("invalid CEL expression {source:?}: {e}"))?;
    rewrite(&mut expr, 0)?;
    Ok(expr)
}

/// Deepest nesting of `(`, `[`, `{` and `?` outside string literals. A `?` counts until the
/// end of its bracket level, which over-counts chained conditionals only where they nest.
fn text_nesting(source: &str) -> usize {
    let mut stack: Vec<usize> = vec![0];
    let mut deepest = 0;
    let mut quote: Option<char> = None;
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            match c {
                '\\' => {
                    chars.next();
                }
                _ if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => stack.push(0),
            ')' | ']' | '}' if stack.len() > 1 => {
                stack.pop();
            }
            '?' => {
                if let Some(top) = stack.last_mut() {
                    *top += 1;
                }
            }
            _ => {}
        }
        deepest = deepest.max(stack.len() - 1 + stack.iter().sum::<usize>());
    }
    deepest
}

/// Checks the depth of `expr` and refuses what cannot be evaluated, wrapping comprehension
/// conditions in [`TICK`] and ranges in [`ITERABLE`].
fn rewrite(expr: &mut IdedExpr, depth: usize) -> Result<(), String> {
    if depth > MAX_TREE_DEPTH {
        return Err(format!(
            "CEL expression is nested more than {MAX_TREE_DEPTH} deep"
        ));
    }
    let next = depth + 1;
    match &mut expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                rewrite(target, next)?;
            }
            for arg in &mut call.args {
                rewrite(arg, next)?;
            }
        }
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                rewrite(part, next)?;
            }
            wrap(&mut c.iter_range, ITERABLE);
            wrap(&mut c.loop_cond, TICK);
        }
        Expr::List(list) => {
            for e in &mut list.elements {
                rewrite(e, next)?;
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(e) => {
                        rewrite(&mut e.key, next)?;
                        rewrite(&mut e.value, next)?;
                    }
                    EntryExpr::StructField(_) => return Err(no_structs()),
                }
            }
        }
        Expr::Select(select) => rewrite(&mut select.operand, next)?,
        Expr::Struct(_) => return Err(no_structs()),
        Expr::Unspecified => return Err("CEL expression has an empty part".into()),
        Expr::Ident(_) | Expr::Literal(_) => {}
        #[allow(unreachable_patterns)]
        _ => return Err("CEL expression uses syntax Lookout cannot evaluate".into()),
    }
    Ok(())
}

fn no_structs() -> String {
    "CEL message literals (Type{field: value}) are not supported: the body is JSON".into()
}

/// Replaces `expr` by `function(expr)`.
fn wrap(expr: &mut IdedExpr, function: &str) {
    let inner = std::mem::take(expr);
    *expr = IdedExpr {
        id: inner.id,
        expr: Expr::Call(CallExpr {
            func_name: function.into(),
            target: None,
            args: vec![inner],
        }),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_blackbox_example() {
        let p = CelProgram::compile("body.foo == 'bar' && body.baz.startsWith('q')").unwrap();
        assert_eq!(p.source(), "body.foo == 'bar' && body.baz.startsWith('q')");
    }

    #[test]
    fn refuses_syntax_errors() {
        let e = CelProgram::compile("body.foo ==").unwrap_err();
        assert!(e.contains("invalid CEL expression"), "{e}");
        assert!(CelProgram::compile("").is_err());
    }

    #[test]
    fn refuses_long_and_deep_text_before_parsing() {
        let long = format!("body.a == '{}'", "x".repeat(MAX_EXPRESSION_BYTES));
        let e = CelProgram::compile(&long).unwrap_err();
        assert!(e.contains("bytes long"), "{e}");
        let deep = format!("{}true{}", "(".repeat(33), ")".repeat(33));
        let e = CelProgram::compile(&deep).unwrap_err();
        assert!(e.contains("33 deep"), "{e}");
        let ok = format!("{}true{}", "(".repeat(20), ")".repeat(20));
        CelProgram::compile(&ok).unwrap();
        let ternaries = "true ? 1 : ".repeat(40) + "2";
        assert!(
            CelProgram::compile(&ternaries)
                .unwrap_err()
                .contains("deep")
        );
        // Brackets inside strings do not count.
        CelProgram::compile(&format!("body.a == '{}'", "(".repeat(100))).unwrap();
    }

    #[test]
    fn refuses_deep_trees_from_operator_chains() {
        let chain = vec!["1"; 2000].join("+");
        assert!(chain.len() < MAX_EXPRESSION_BYTES - 4);
        let e = CelProgram::compile(&format!("{chain}==1")).unwrap_err();
        assert!(e.contains("recursion") || e.contains("deep"), "{e}");
        let negations = format!("{}true", "!".repeat(3000));
        // Either refused or compiled to a tree no deeper than the limit: never a crash.
        let _ = CelProgram::compile(&negations);
    }

    #[test]
    fn refuses_message_literals() {
        let e = CelProgram::compile("Foo{a: 1} == body").unwrap_err();
        assert!(e.contains("not supported") || e.contains("invalid"), "{e}");
    }
}
