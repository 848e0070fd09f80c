//! The one thread that runs llama.cpp's graph computations (`llama_decode`, `llama_encode`) for
//! every context in the process.
//!
//! ggml's CPU backend spreads each computation over an OpenMP team, and a team belongs to the
//! thread that starts it. When the generation engine and the embedding engine each computed on
//! their own thread the process held two teams; once libgomp manages more threads than the
//! process has CPUs it stops spin-waiting at barriers (`gomp_throttled_spin_count_var`: 100 spins
//! instead of 300,000), so every barrier between graph nodes became a futex sleep and wake-up.
//! On a 2-core machine that cost embeddings 8 to 13% against llama-server, which computes on one
//! thread. Here too: the workers keep their contexts, batches and loops, and hand only the
//! computation to this thread, waiting for it.
//!
//! Computations from different engines run one after another, in the order they arrive. On a
//! device whose cores each compute thread already uses, that is also what is fastest: two
//! computations at once only share the same cores and wait on each other's barriers.

use std::sync::OnceLock;

/// ggml keeps small per-node buffers on the stack; the main thread's size, as llama.cpp's tools
/// compute on their main thread.
const STACK_BYTES: usize = 8 << 20;

/// Runs `work` on the compute thread and returns its result; the caller waits. A panic in
/// `work` resumes in the caller. If the thread could not be started, `work` runs here.
pub fn run<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match pool() {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "edgellm-compute".to_string())
            .stack_size(STACK_BYTES)
            .build()
            .ok()
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_one_named_thread_and_borrows_from_the_caller() {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let name = run(|| std::thread::current().name().map(str::to_string));
            seen.push(name);
        }
        assert!(seen.iter().all(|n| n.as_deref() == Some("edgellm-compute")));

        let mut counter = 0;
        run(|| counter += 41);
        run(|| counter += 1);
        assert_eq!(counter, 42);
    }

    #[test]
    fn a_panic_in_work_reaches_the_caller_and_the_thread_goes_on() {
        let caught = std::panic::catch_unwind(|| run(|| panic!("boom")));
        assert!(caught.is_err());
        assert_eq!(run(|| 7), 7);
    }
}
