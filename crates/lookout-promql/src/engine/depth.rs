//! The nesting bound every query passes before anything recursive touches it.
//!
//! promql-parser builds its tree with a table-driven parser, but almost everything that
//! reads the tree afterwards recurses over it: the parser's own type checks and `Drop`,
//! `Display`, the [`rewrite`](super::rewrite) of duration expressions and this engine's
//! evaluator. A deep enough tree overflows the thread's stack, which aborts the whole
//! process (Rust cannot catch a stack overflow). Go grows its stacks, so Prometheus has no
//! such limit; here every query text is first scanned once, without recursion, for an
//! upper bound of the depth of the tree it can parse to, and refused past
//! `max_depth` (`--query.max-depth`).
//!
//! The bound: within one bracket group, one argument (between commas) parses to a tree of
//! its operators (binary, unary, `offset`, `@`) and its operands; with `k` operator tokens
//! and suffixes, no path through that argument passes more than `k` operator nodes, one
//! operand node and the nodes of one nested group. So the depth of an argument is at most
//! `k + 1 + max(depth of its groups)`, and a group (parentheses, a call's or aggregation's
//! arguments, a selector's braces, a range or subquery's brackets) adds one level. Long
//! chains count as deep as they are long (`a + b + c` is a left-deep tree), and every
//! operator character counts on its own (`1+-1` is a binary and a unary operator), so the
//! bound errs only on the high side.

/// Default of `--query.max-depth`, and its highest accepted value: the depth the stack of
/// an evaluating thread ([`EVAL_STACK_BYTES`]) holds with a wide margin in a debug build
/// (the worst shape measured, nested `label_replace` calls, needs about 25 KiB a level
/// there, so 256 levels take about 6.5 MiB).
pub const DEFAULT_MAX_DEPTH: usize = 256;

/// The stack every thread that parses or evaluates queries needs: the programs' async
/// runtimes and their main work run on threads of this size.
pub const EVAL_STACK_BYTES: usize = 32 * 1024 * 1024;

/// One open bracket group.
#[derive(Clone, Copy)]
struct Frame {
    /// Levels above this group on the way to the root (its enclosing arguments' operators
    /// and groups).
    base: usize,
    /// Operator tokens in the argument being read.
    ops: usize,
    /// The deepest group closed so far in that argument.
    child: usize,
    /// The deepest argument of this group closed so far.
    deepest_arg: usize,
}

impl Frame {
    fn new(base: usize) -> Frame {
        Frame {
            base,
            ops: 0,
            child: 0,
            deepest_arg: 0,
        }
    }

    /// The depth bound of the argument being read, as far as it has been read: its
    /// operators above either an operand or its deepest group.
    fn arg_depth(&self) -> usize {
        self.ops + self.child.max(1)
    }

    /// The bound from the root through this group's argument being read.
    fn running(&self) -> usize {
        self.base + self.arg_depth()
    }
}

/// Where and how deep a query first exceeds the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    /// Byte offset in the query of the token where the bound first exceeded the limit.
    pub at: usize,
    /// The limit.
    pub limit: usize,
}

impl TooDeep {
    /// The message, naming the limit and its flag.
    pub fn message(&self) -> String {
        format!(
            "expression nested deeper than the {}-level limit (--query.max-depth)",
            self.limit
        )
    }
}

/// Checks that `query` cannot parse to a tree deeper than `limit` levels; linear in the
/// length of the query, memory bounded by `limit`.
pub fn check_depth(query: &str, limit: usize) -> Result<(), TooDeep> {
    let b = query.as_bytes();
    let mut stack: Vec<Frame> = vec![Frame::new(0)];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at = i;
        i += 1;
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(b, at),
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                let top = top(&mut stack);
                // A bracket after an operand (`x[5m]`, `(e)[1h:]`) wraps it: count it as an
                // operator too, so a suffix never lowers the bound.
                if c == b'[' {
                    top.ops += 1;
                }
                // The group's node sits below the operators read so far.
                let base = top.base + top.ops + 1;
                stack.push(Frame::new(base));
            }
            b')' | b']' | b'}' => {
                if stack.len() > 1
                    && let Some(closed) = stack.pop()
                {
                    let depth = closed.deepest_arg.max(closed.arg_depth()) + 1;
                    let top = top(&mut stack);
                    top.child = top.child.max(depth);
                }
            }
            b',' => {
                let top = top(&mut stack);
                top.deepest_arg = top.deepest_arg.max(top.arg_depth());
                top.ops = 0;
                top.child = 0;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' | b'~' | b'@' => {
                top(&mut stack).ops += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'.' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b':' | b'.'))
                {
                    i += 1;
                }
                let word = &query[at..i];
                if ["and", "or", "unless", "atan2", "offset"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    top(&mut stack).ops += 1;
                }
            }
            _ => {}
        }
        if stack.last().is_some_and(|f| f.running() > limit) {
            return Err(TooDeep { at, limit });
        }
    }
    Ok(())
}

/// The innermost open group (the root frame is never popped).
fn top(stack: &mut Vec<Frame>) -> &mut Frame {
    if stack.is_empty() {
        stack.push(Frame::new(0));
    }
    let last = stack.len() - 1;
    &mut stack[last]
}

/// The index just past the string literal opened at `start` (or the end of the text).
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(q: &str) -> usize {
        (1..10_000)
            .find(|&l| check_depth(q, l).is_ok())
            .unwrap_or(usize::MAX)
    }

    fn tree_depth(e: &promql_parser::parser::Expr) -> usize {
        use promql_parser::parser::Expr;
        1 + match e {
            Expr::Aggregate(a) => {
                let p = a.param.as_deref().map(tree_depth).unwrap_or(0);
                p.max(tree_depth(&a.expr))
            }
            Expr::Unary(u) => tree_depth(&u.expr),
            Expr::Binary(b) => tree_depth(&b.lhs).max(tree_depth(&b.rhs)),
            Expr::Paren(p) => tree_depth(&p.expr),
            Expr::Subquery(s) => tree_depth(&s.expr),
            Expr::Call(c) => c.args.args.iter().map(|a| tree_depth(a)).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn the_bound_is_never_below_the_parsed_depth() {
        let queries = [
            "1",
            "up",
            "1+1+1+1",
            "1+(1+(1+1))",
            "-(-(-1))",
            "1+-1",
            "1 - -1 - -1",
            "sum(sum(sum(up)))",
            "sum by (a, b) (rate(x[5m]))",
            "max_over_time((max_over_time(up[5m]))[5m:1m])",
            "max_over_time((sum(x) > 1)[1h:5m] offset 1m)",
            "label_join(up, \"a(((\", \",\", \"b\")",
            "up{a=\"(((\"} or up # ((((((\n or up",
            "x and on(a) y unless z or w",
            "1e-5 - 0x1e-5 - 1e-5",
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket{a=~\"b|c\"}[5m])))",
            "(a + b) * (c + (d / (e - f)))",
        ];
        for q in queries {
            let expr = promql_parser::parser::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(
                bound(q) >= tree_depth(&expr),
                "{q}: {} < {}",
                bound(q),
                tree_depth(&expr)
            );
        }
    }

    #[test]
    fn chains_nesting_and_calls_count() {
        let chain = vec!["1"; 300].join("+");
        let e = check_depth(&chain, 256).unwrap_err();
        assert_eq!(&chain[e.at..e.at + 1], "+");
        assert!(e.at < 600);
        let nested = format!("{}up{}", "sum(".repeat(300), ")".repeat(300));
        assert!(check_depth(&nested, 256).is_err());
        assert_eq!(bound(&chain), 300);
        assert_eq!(bound(&nested), 301);
        let unary = format!("{}1", "-".repeat(300));
        assert!(check_depth(&unary, 256).is_err());
        let right = format!("{}1{}", "1+(".repeat(200), ")".repeat(200));
        assert!(check_depth(&right, 256).is_err());
        // Arguments are siblings: many of them do not add up.
        let args = format!("label_join(up, \"a\", \",\"{})", ", \"b\"".repeat(10_000));
        assert!(check_depth(&args, 16).is_ok());
        // Brackets inside strings and comments do not count.
        let quoted = format!("up{{a=\"{}\"}}", "(".repeat(10_000));
        assert!(check_depth(&quoted, 16).is_ok());
        assert!(check_depth("up # ((((((((((((((((((((", 8).is_ok());
        assert_eq!(
            check_depth(&chain, 10).unwrap_err().message(),
            "expression nested deeper than the 10-level limit (--query.max-depth)"
        );
    }

    #[test]
    fn unbalanced_text_is_left_to_the_parser() {
        assert!(check_depth(")))]]}}}", 4).is_ok());
        assert!(check_depth("((((", 3).is_err());
        assert!(check_depth("\"unterminated ((((", 3).is_ok());
    }
}
