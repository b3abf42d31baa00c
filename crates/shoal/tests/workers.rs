//! Worker groups in process: tasks and threads told their group, index and count; a failing
//! worker restarted with a backoff and recorded; a finished one left alone; sizes from
//! `[workers]`; every worker stopped with the application.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config_args, no_env, wait_for, Scratch};
use shoal::workers::WorkerState;
use shoal::{App, Exit, WorkerKind};

const LIMIT: Duration = Duration::from_secs(10);

/// Who each worker was told it is: (group, index, count, thread name).
type Seen = Arc<Mutex<Vec<(String, usize, usize, Option<String>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_and_thread_workers_know_who_they_are_and_stop_with_the_app() {
    let dir = Scratch::new("workers");
    let file = dir.write("app.toml", "[workers]\npollers = 3\n");
    let seen: Seen = Arc::default();
    let stopped = Arc::new(AtomicUsize::new(0));
    let app = {
        let (seen, stopped) = (seen.clone(), stopped.clone());
        App::new("workers", "1.0").setup(move |app| {
            let (s, st) = (seen.clone(), stopped.clone());
            app.workers("pollers", 2, move |w| {
                let (s, st) = (s.clone(), st.clone());
                async move {
                    s.lock()
                        .unwrap()
                        .push((w.group().into(), w.index(), w.count(), None));
                    w.closing().await;
                    st.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            });
            let (s, st) = (seen.clone(), stopped.clone());
            let group = app.thread_workers("crunchers", 2, move |w| {
                let name = std::thread::current().name().map(str::to_owned);
                s.lock()
                    .unwrap()
                    .push((w.group().into(), w.index(), w.count(), name));
                while !w.wait_closing(Duration::from_secs(60)) {}
                st.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
            assert_eq!(group.kind(), WorkerKind::Thread);
            Ok(())
        })
    };
    let running = app
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    wait_for("every worker to start", LIMIT, || {
        (seen.lock().unwrap().len() == 5).then_some(())
    })
    .await;
    let mut who = seen.lock().unwrap().clone();
    who.sort();
    assert_eq!(
        who,
        [
            ("crunchers".into(), 0, 2, Some("crunchers-0".into())),
            ("crunchers".into(), 1, 2, Some("crunchers-1".into())),
            // [workers] pollers = 3 replaces the declared 2.
            ("pollers".into(), 0, 3, None),
            ("pollers".into(), 1, 3, None),
            ("pollers".into(), 2, 3, None),
        ]
    );
    let status = running.handle().status();
    assert_eq!(status.workers.len(), 5);
    for w in &status.workers {
        assert_eq!(w.state, WorkerState::Running, "{w:?}");
        assert_eq!(w.pid, Some(std::process::id()));
    }

    running.handle().close();
    let handle = running.handle().clone();
    assert_eq!(running.wait().await, Exit::Closed);
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        5,
        "every worker saw the close"
    );
    for w in handle.status().workers {
        assert_eq!(w.state, WorkerState::Stopped, "{w:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_worker_is_restarted_and_recorded_and_a_finished_one_is_not() {
    let runs = Arc::new(AtomicUsize::new(0));
    let done_runs = Arc::new(AtomicUsize::new(0));
    let app = {
        let (runs, done_runs) = (runs.clone(), done_runs.clone());
        App::new("workers", "1.0").setup(move |app| {
            let runs = runs.clone();
            app.workers("flaky", 1, move |w| {
                let runs = runs.clone();
                async move {
                    match runs.fetch_add(1, Ordering::SeqCst) {
                        0 => Err("the feed went away".into()),
                        1 => panic!("a bug in the worker"),
                        _ => {
                            w.closing().await;
                            Ok(())
                        }
                    }
                }
            });
            let done_runs = done_runs.clone();
            app.thread_workers("once", 1, move |_| {
                done_runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
            Ok(())
        })
    };
    let running = app
        .args(Vec::<String>::new(), no_env())
        .start()
        .await
        .unwrap();
    let handle = running.handle().clone();
    let flaky = wait_for("the flaky worker to run a third time", LIMIT, || {
        let status = handle.status();
        let w = status.workers.iter().find(|w| w.group == "flaky")?.clone();
        (w.state == WorkerState::Running && w.restarts == 2).then_some(w)
    })
    .await;
    assert!(
        flaky
            .last_exit
            .as_deref()
            .unwrap()
            .contains("a bug in the worker"),
        "{flaky:?}"
    );
    let status = handle.status();
    assert_eq!(status.errors, 2);
    let error = status.last_error.unwrap();
    assert_eq!(error.origin, "worker flaky[0]");
    assert!(error.message.contains("panicked"), "{error:?}");
    let once = wait_for("the finished worker", LIMIT, || {
        let status = handle.status();
        let w = status.workers.iter().find(|w| w.group == "once")?.clone();
        (w.state == WorkerState::Finished).then_some(w)
    })
    .await;
    assert_eq!(once.restarts, 0);
    assert_eq!(done_runs.load(Ordering::SeqCst), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    handle.close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coroutines_run_side_by_side_and_a_failing_one_restarts_the_worker() {
    // (worker index, coroutine) of every coroutine started, in order.
    let started: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let app = {
        let started = started.clone();
        App::new("workers", "1.0").setup(move |app| {
            let started = started.clone();
            app.workers("fetch", 2, move |w| {
                let started = started.clone();
                shoal::workers::coroutines(w, 3, move |w, coroutine| {
                    let started = started.clone();
                    async move {
                        let first_run = {
                            let mut started = started.lock().unwrap();
                            let first = !started.contains(&(w.index(), coroutine));
                            started.push((w.index(), coroutine));
                            first
                        };
                        // Worker 1's coroutine 2 fails once: the whole worker restarts.
                        if first_run && w.index() == 1 && coroutine == 2 {
                            return Err("coroutine 2 lost its feed".into());
                        }
                        w.closing().await;
                        Ok(())
                    }
                })
            });
            Ok(())
        })
    };
    let running = app
        .args(Vec::<String>::new(), no_env())
        .start()
        .await
        .unwrap();
    let handle = running.handle().clone();
    let runs =
        |seen: &[(usize, usize)], who: (usize, usize)| seen.iter().filter(|&&s| s == who).count();
    let restarted = wait_for("worker 1 to fail and run again", LIMIT, || {
        let status = handle.status();
        let w = status.workers.iter().find(|w| w.index == 1)?.clone();
        let seen = started.lock().unwrap();
        let again =
            runs(&seen, (1, 2)) == 2 && runs(&seen, (1, 0)) >= 1 && runs(&seen, (1, 1)) >= 1;
        (w.restarts == 1 && again).then_some(w)
    })
    .await;
    assert!(
        restarted
            .last_exit
            .as_deref()
            .unwrap()
            .contains("coroutine 2 lost its feed"),
        "{restarted:?}"
    );
    // Worker 0 ran its three coroutines once, side by side with worker 1's; worker 1 ran its
    // again after the restart (the first run's others may have been ended before they ran).
    let mut seen = started.lock().unwrap().clone();
    seen.retain(|&(index, _)| index == 0);
    seen.sort();
    assert_eq!(seen, [(0, 0), (0, 1), (0, 2)]);
    let worker0 = handle
        .status()
        .workers
        .into_iter()
        .find(|w| w.index == 0)
        .unwrap();
    assert_eq!((worker0.restarts, worker0.state), (0, WorkerState::Running));

    handle.close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn worker_sizes_for_undeclared_groups_and_duplicate_groups_are_rejected() {
    let dir = Scratch::new("workers-bad");
    let file = dir.write("app.toml", "[workers]\npolers = 3\n");
    let app = App::new("workers", "1.0").setup(|app| {
        app.workers("pollers", 1, |w| async move {
            w.closing().await;
            Ok(())
        });
        Ok(())
    });
    let exit = app
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap_err()
        .exit();
    assert_eq!(exit, Exit::BadConfig);

    let twice = App::new("workers", "1.0").setup(|app| {
        app.workers("a", 1, |_| async { Ok(()) });
        app.thread_workers("a", 1, |_| Ok(()));
        Ok(())
    });
    let exit = twice
        .args(Vec::<String>::new(), no_env())
        .start()
        .await
        .unwrap_err()
        .exit();
    assert_eq!(exit, Exit::BadConfig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_ignores_the_close_ends_the_grace_period() {
    let dir = Scratch::new("workers-grace");
    let file = dir.write("app.toml", "[shutdown]\ngrace = \"200ms\"\n");
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    /// Counts the drop of the worker's future.
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let app = {
        let (started, dropped) = (started.clone(), dropped.clone());
        App::new("workers", "1.0").setup(move |app| {
            let (started, dropped) = (started.clone(), dropped.clone());
            app.workers("stubborn", 1, move |_| {
                started.fetch_add(1, Ordering::SeqCst);
                let guard = Guard(dropped.clone());
                async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                    Ok(())
                }
            });
            Ok(())
        })
    };
    let running = app
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    wait_for("the worker to start", LIMIT, || {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    running.handle().close();
    assert_eq!(running.wait().await, Exit::GraceExpired);
    // Past the grace period the worker is dropped, not left running.
    wait_for("the stubborn worker to be dropped", LIMIT, || {
        (dropped.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn process_groups_need_a_process_and_rpc_is_a_reserved_name() {
    let app = App::new("workers", "1.0").setup(|app| {
        app.workers("isolated", 1, |_| async { Ok(()) }).processes();
        Ok(())
    });
    let exit = app
        .args(Vec::<String>::new(), no_env())
        .start()
        .await
        .unwrap_err()
        .exit();
    assert_eq!(exit, Exit::BadConfig);
    for name in ["rpc", "a b", "a:b", ""] {
        let app = App::new("workers", "1.0").setup(move |app| {
            app.workers(name, 1, |_| async { Ok(()) });
            Ok(())
        });
        let exit = app
            .args(Vec::<String>::new(), no_env())
            .start()
            .await
            .unwrap_err()
            .exit();
        assert_eq!(exit, Exit::BadConfig, "{name:?}");
    }
}
