//! Runs a fuzz input's work on a thread with the stack Lookout gives every thread that
//! parses or evaluates queries (`EVAL_STACK_BYTES`), so that the depth bound is tested
//! against the stack it was sized for; a panic there is raised again on libFuzzer's
//! thread, so it is reported as a crash with its input.

use lookout_promql::engine::depth::EVAL_STACK_BYTES;

pub fn on_eval_stack(work: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(EVAL_STACK_BYTES)
        .spawn(work)
        .unwrap_or_else(|e| panic!("cannot start the evaluation thread: {e}"));
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
