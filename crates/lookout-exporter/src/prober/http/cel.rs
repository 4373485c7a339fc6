//! `fail_if_body_json_matches_cel` and `fail_if_body_json_not_matches_cel`, as
//! blackbox_exporter evaluates them: the body is parsed as JSON (numbers as doubles, as Go's
//! `encoding/json` reads them into `any`) and bound to `body`; a body that is not JSON, an
//! evaluation error or a result that is not a boolean fails the probe, as does a match of
//! the first or a non-match of the second. `probe_failed_due_to_cel` (published only by
//! modules with an expression) says whether the expressions failed the probe.
//!
//! The body comes from the target. Its size is bounded as a regexp's is (see [`super::body`]);
//! serde_json refuses JSON nested more than 128 deep; the work runs on the blocking pool,
//! never on an async worker, at most one evaluation per CPU at once; and every comprehension
//! iteration checks the probe's deadline and whether the probe was abandoned, so that a
//! quadratic expression over a large array ends with the probe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use cel::objects::{Key, Map};
use cel::{ExecutionError, Value};
use tokio::sync::Semaphore;

use crate::config::{CelProgram, HttpProbe};
use crate::prober::{Failure, Recorder, reason};

pub(super) const METRIC: &str = "probe_failed_due_to_cel";
pub(super) const HELP: &str = "Indicates if probe failed due to CEL expression not matching";

/// Whether the module has a CEL expression.
pub(super) fn configured(cfg: &HttpProbe) -> bool {
    cfg.fail_if_body_json_matches_cel.is_some() || cfg.fail_if_body_json_not_matches_cel.is_some()
}

/// Sets the abandon flag when the probe (and so this future) is dropped at its deadline.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Evaluations running at once: one per CPU, so that expressions cannot starve the rest.
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

/// Checks `body` against the module's expressions (if any) before `deadline`, setting
/// `probe_failed_due_to_cel`.
pub(super) async fn check(
    cfg: &HttpProbe,
    body: Vec<u8>,
    deadline: Instant,
    rec: &mut Recorder,
) -> Result<(), Failure> {
    if !configured(cfg) {
        return Ok(());
    }
    let matches = cfg.fail_if_body_json_matches_cel.clone();
    let not_matches = cfg.fail_if_body_json_not_matches_cel.clone();
    let abandoned = Arc::new(AtomicBool::new(false));
    let _guard = AbandonOnDrop(abandoned.clone());
    let verdict = match permits().acquire().await {
        Ok(_permit) => tokio::task::spawn_blocking(move || {
            let stop = Stop {
                deadline,
                abandoned,
            };
            evaluate(&body, matches.as_ref(), not_matches.as_ref(), &stop)
        })
        .await
        .unwrap_or_else(|_| Err("the CEL evaluation failed".into())),
        Err(_) => Err("the CEL evaluator is closed".into()),
    };
    match verdict {
        Ok(()) => {
            rec.set(METRIC, HELP, 0.0);
            Ok(())
        }
        // Stopped by the deadline (the evaluator's own check can see it a moment before the
        // probe's timer does): the probe timed out, the expression did not fail.
        Err(message) if Instant::now() >= deadline => {
            rec.set(METRIC, HELP, 0.0);
            Err(Failure::new(reason::TIMEOUT, message))
        }
        Err(message) => {
            rec.set(METRIC, HELP, 1.0);
            Err(Failure::new(reason::BODY_CEL, message))
        }
    }
}

/// When an evaluation must stop.
struct Stop {
    deadline: Instant,
    abandoned: Arc<AtomicBool>,
}

impl Stop {
    fn reached(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

/// Parses the body and evaluates both expressions, blackbox_exporter's order; the error is
/// the probe's failure message.
fn evaluate(
    body: &[u8],
    matches: Option<&CelProgram>,
    not_matches: Option<&CelProgram>,
    stop: &Stop,
) -> Result<(), String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let value = to_value(json);
    if stop.reached() {
        return Err("deadline reached before the CEL expressions were evaluated".into());
    }
    if let Some(p) = matches {
        if run(p, &value, stop)? {
            return Err(format!("body matched CEL expression {:?}", p.source()));
        }
    }
    if let Some(p) = not_matches {
        if !run(p, &value, stop)? {
            return Err(format!(
                "body did not match CEL expression {:?}",
                p.source()
            ));
        }
    }
    Ok(())
}

/// Evaluates one expression with `body` bound, stopping at `stop`.
fn run(program: &CelProgram, body: &Value, stop: &Stop) -> Result<bool, String> {
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("body", body.clone());
    let deadline = stop.deadline;
    let abandoned = stop.abandoned.clone();
    ctx.add_function(crate::config::cel::TICK, move |cond: Value| {
        if abandoned.load(Ordering::Relaxed) || Instant::now() >= deadline {
            Err(ExecutionError::function_error(
                "deadline",
                "the probe's deadline was reached",
            ))
        } else {
            Ok(cond)
        }
    });
    ctx.add_function(crate::config::cel::ITERABLE, |range: Value| match range {
        Value::List(_) | Value::Map(_) => Ok(range),
        other => Err(ExecutionError::function_error(
            "comprehension",
            format!("cannot iterate over a {}", other.type_of()),
        )),
    });
    // The crate panics on a few inputs it does not support; a panic must not end the thread
    // without an answer.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Value::resolve(program.expr(), &ctx)
    }))
    .map_err(|_| {
        format!(
            "CEL expression {:?} could not be evaluated",
            program.source()
        )
    })?;
    match result {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "CEL expression {:?} gave a {}, not a boolean",
            program.source(),
            other.type_of()
        )),
        Err(e) => Err(format!(
            "error evaluating CEL expression {:?}: {e}",
            program.source()
        )),
    }
}

/// The JSON value as CEL sees it (numbers are doubles, as in Go's `encoding/json`). Recursion
/// is bounded by serde_json's nesting limit (128).
fn to_value(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(Arc::new(s)),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.into_iter().map(to_value).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, Value> = fields
                .into_iter()
                .map(|(k, v)| (Key::String(Arc::new(k)), to_value(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stop(after: Duration) -> Stop {
        Stop {
            deadline: Instant::now() + after,
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }

    fn eval(expr: &str, body: &str) -> Result<(), String> {
        let p = CelProgram::compile(expr).unwrap();
        evaluate(
            body.as_bytes(),
            None,
            Some(&p),
            &stop(Duration::from_secs(5)),
        )
    }

    #[test]
    fn blackbox_example_matches() {
        let body = r#"{ "foo": "bar", "baz": "qux" }"#;
        eval("body.foo == 'bar' && body.baz.startsWith('q')", body).unwrap();
        assert!(eval("body.foo == 'baz'", body).is_err());
    }

    #[test]
    fn numbers_are_doubles_equal_to_ints() {
        eval("body.n == 1 && body.n > 0 && body.n == 1.0", r#"{"n": 1}"#).unwrap();
    }

    #[test]
    fn not_json_non_boolean_and_errors_fail() {
        assert!(eval("true", "not json").unwrap_err().contains("not JSON"));
        assert!(eval("true", "").unwrap_err().contains("not JSON"));
        assert!(
            eval("body.a", r#"{"a": 1}"#)
                .unwrap_err()
                .contains("not a boolean")
        );
        assert!(
            eval("body.missing == 1", "{}")
                .unwrap_err()
                .contains("error")
        );
    }

    #[test]
    fn iterating_a_scalar_fails_instead_of_panicking() {
        let e = eval("body.a.all(x, x > 0)", r#"{"a": "text"}"#).unwrap_err();
        assert!(e.contains("cannot iterate"), "{e}");
        eval("body.a.all(x, x > 0)", r#"{"a": [1, 2]}"#).unwrap();
        eval("body.exists(k, k == 'a')", r#"{"a": [1, 2]}"#).unwrap();
    }

    #[test]
    fn json_deeper_than_128_is_refused() {
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(eval("true", &deep).unwrap_err().contains("recursion limit"));
        let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
        eval("true", &ok).unwrap();
    }

    #[test]
    fn quadratic_expressions_stop_at_the_deadline() {
        let body = format!("{{\"a\": [{}0]}}", "0,".repeat(20_000));
        let p = CelProgram::compile("body.a.all(x, body.a.all(y, x == y))").unwrap();
        let started = Instant::now();
        let e = evaluate(
            body.as_bytes(),
            Some(&p),
            None,
            &stop(Duration::from_millis(200)),
        )
        .unwrap_err();
        assert!(e.contains("deadline"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
