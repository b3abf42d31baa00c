//! Crontab jobs run as real processes from scripts in temporary package directories: where
//! and how they run, timeouts, overlap, failures to start, history and recovery after the
//! agent is killed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_agent::cron::{Cron, CronError, CronOptions, Outcome, RunRecord, Trigger};
use shoal_agent::{DataDir, State};
use shoal_pkg::manifest::{Command, CronJob, Name, Overlap};
use tokio::time::Instant;

mod common;
use common::Scratch;

/// Every second.
const EVERY_SECOND: &str = "* * * * * *";
/// Once a year: for jobs that only run when asked.
const YEARLY: &str = "0 0 0 1 1 *";

#[tokio::test]
async fn a_run_happens_in_its_package_directory_and_is_recorded() {
    let t = Setup::new("where", CronOptions::default()).await;
    t.script(
        "report",
        r#"echo "cwd=$(pwd)"
echo "app=$SHOAL_APP data=$SHOAL_APP_DATA job=$SHOAL_CRON_JOB"
echo "args=$*"
echo "to stderr" >&2
exit 3"#,
    );
    let mut job = t.job("report", YEARLY, Overlap::Forbid);
    job.command.args = vec!["one".into(), "two".into()];
    t.add(vec![job]);

    let id = t.cron.run_now(&t.app, &name("report")).await.unwrap();
    let run = t.cron.wait(id).await.unwrap();
    assert_eq!(run.outcome, Outcome::Exited { code: 3 }, "{run:?}");
    assert_eq!(run.trigger, Trigger::Manual);
    assert_eq!((run.app.as_str(), run.job.as_str()), ("app", "report"));
    assert!(run.duration.is_some());
    assert!(run.pid.is_some());
    let data = t.data.data(&t.app);
    assert_eq!(
        run.output,
        format!(
            "cwd={}\napp=app data={} job=report\nargs=one two\nto stderr\n",
            t.pkg.display(),
            data.display()
        )
    );
    assert_eq!(run.outcome.to_string(), "exit 3");
    assert_eq!(
        t.cron.history(&t.app, None, 10).unwrap(),
        std::slice::from_ref(&run)
    );
    let status = &t.cron.list().unwrap()[0];
    assert_eq!(status.last.as_ref(), Some(&run));
    assert!(status.running.is_empty());
    assert!(status.next.is_some());
}

#[tokio::test]
async fn a_scheduled_job_runs_once_per_tick() {
    let t = Setup::new("ticks", CronOptions::default()).await;
    t.script("tick", "echo tick");
    let added = Instant::now();
    t.add(vec![t.job("tick", EVERY_SECOND, Overlap::Forbid)]);

    until("three scheduled runs", || {
        let done = t
            .history("tick")
            .iter()
            .filter(|r| r.outcome.succeeded())
            .count();
        (done >= 3).then_some(())
    })
    .await;
    assert!(t.cron.remove(&t.app));
    let elapsed = added.elapsed();
    let runs = t.history("tick");
    // One run per tick at most: no more runs than seconds begun since the job was added.
    assert!(
        runs.len() as u64 <= elapsed.as_secs() + 1,
        "{} runs in {elapsed:?}",
        runs.len()
    );
    for run in &runs {
        assert_eq!(run.trigger, Trigger::Schedule);
        assert!(
            !run.outcome.succeeded() || run.output == "tick\n",
            "{run:?}"
        );
    }
    assert!(!t.cron.remove(&t.app));
    assert!(t.cron.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_timeout_stops_the_whole_process_group() {
    let options = CronOptions {
        kill_grace: Duration::from_millis(300),
        ..CronOptions::default()
    };
    let t = Setup::new("timeout", options).await;
    // Both ignore SIGTERM, so only the SIGKILL to the group ends them.
    t.script(
        "stuck",
        "trap '' TERM\nsleep 1000 &\necho $! > child.pid\necho started\nwait",
    );
    let mut job = t.job("stuck", YEARLY, Overlap::Forbid);
    job.timeout = Duration::from_secs(1);
    t.add(vec![job]);

    let id = t.cron.run_now(&t.app, &name("stuck")).await.unwrap();
    let run = t.cron.wait(id).await.unwrap();
    assert_eq!(run.outcome, Outcome::TimedOut, "{run:?}");
    assert_eq!(run.outcome.to_string(), "timed out");
    assert!(
        run.duration.unwrap() >= Duration::from_millis(1300),
        "{run:?}"
    );
    assert_eq!(run.output, "started\n");
    let child = read_pid(&t.pkg.join("child.pid"));
    until("the job's child to be gone", || gone(child).then_some(())).await;
    assert!(gone(run.pid.unwrap()));
}

#[tokio::test]
async fn a_job_that_exits_leaves_no_process_behind() {
    let t = Setup::new("leftover", CronOptions::default()).await;
    // The child keeps the output pipe open: the run still ends when the job does.
    t.script("forks", "sleep 1000 &\necho $! > child.pid\necho done");
    t.add(vec![t.job("forks", YEARLY, Overlap::Forbid)]);

    let id = t.cron.run_now(&t.app, &name("forks")).await.unwrap();
    let run = t.cron.wait(id).await.unwrap();
    assert_eq!(run.outcome, Outcome::Exited { code: 0 }, "{run:?}");
    assert_eq!(run.output, "done\n");
    let child = read_pid(&t.pkg.join("child.pid"));
    until("the job's child to be gone", || gone(child).then_some(())).await;
}

#[tokio::test]
async fn overlap_forbid_skips_ticks_and_records_them() {
    let t = Setup::new("forbid", CronOptions::default()).await;
    // Two runs at once would find the lock taken and exit 99.
    t.script(
        "slow",
        "mkdir lock || exit 99\nwhile [ ! -e release ]; do sleep 0.02; done\nrmdir lock",
    );
    t.add(vec![t.job("slow", EVERY_SECOND, Overlap::Forbid)]);

    let skipped = until("two skipped ticks", || {
        t.history("slow").into_iter().find_map(|r| match r.outcome {
            Outcome::Skipped { ticks, blocked_by } if ticks >= 2 => Some(blocked_by),
            _ => None,
        })
    })
    .await;
    let status = &t.cron.list().unwrap()[0];
    assert_eq!(status.running, [skipped]);
    let history = t.history("slow");
    assert_eq!(
        history.len(),
        2,
        "one streak of skips, one run: {history:?}"
    );
    assert!(history[0].outcome.to_string().starts_with("skipped "));
    assert!(history[0].duration.unwrap() >= Duration::from_millis(900));

    std::fs::write(t.pkg.join("release"), "").unwrap();
    let first = t.cron.wait(skipped).await.unwrap();
    assert_eq!(first.outcome, Outcome::Exited { code: 0 });
    until("a run after the release", || {
        t.history("slow")
            .iter()
            .any(|r| r.id > skipped && r.outcome.succeeded())
            .then_some(())
    })
    .await;
    t.cron.remove(&t.app);
    for id in t
        .cron
        .list()
        .unwrap()
        .iter()
        .flat_map(|s| s.running.clone())
    {
        t.cron.wait(id).await.unwrap();
    }
    for run in t.history("slow") {
        assert_ne!(
            run.outcome,
            Outcome::Exited { code: 99 },
            "overlap: {run:?}"
        );
    }
}

#[tokio::test]
async fn overlap_allow_runs_side_by_side() {
    let t = Setup::new("allow", CronOptions::default()).await;
    t.script("slow", "while [ ! -e release ]; do sleep 0.02; done");
    t.add(vec![t.job("slow", EVERY_SECOND, Overlap::Allow)]);

    let running = until("two runs at once", || {
        let status = t.cron.list().unwrap().remove(0);
        (status.running.len() >= 2).then_some(status.running)
    })
    .await;
    t.cron.remove(&t.app);
    std::fs::write(t.pkg.join("release"), "").unwrap();
    for id in running {
        let run = t.cron.wait(id).await.unwrap();
        assert_eq!(run.outcome, Outcome::Exited { code: 0 });
    }
    assert!(!t
        .history("slow")
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Skipped { .. })));
}

#[tokio::test]
async fn a_manual_run_honours_overlap_forbid() {
    let t = Setup::new("manual", CronOptions::default()).await;
    t.script("slow", "while [ ! -e release ]; do sleep 0.02; done");
    t.add(vec![t.job("slow", YEARLY, Overlap::Forbid)]);

    let first = t.cron.run_now(&t.app, &name("slow")).await.unwrap();
    let refused = t.cron.run_now(&t.app, &name("slow")).await.unwrap_err();
    assert!(
        matches!(refused, CronError::AlreadyRunning { run, .. } if run == first),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("overlap is \"forbid\""));
    // An upgrade replaces the job; the run of the old version still counts.
    t.add(vec![t.job("slow", YEARLY, Overlap::Forbid)]);
    assert!(t.cron.run_now(&t.app, &name("slow")).await.is_err());

    std::fs::write(t.pkg.join("release"), "").unwrap();
    assert!(t.cron.wait(first).await.unwrap().outcome.succeeded());
    let second = t.cron.run_now(&t.app, &name("slow")).await.unwrap();
    assert!(t.cron.wait(second).await.unwrap().outcome.succeeded());
    assert_eq!(t.history("slow").len(), 2);
}

#[tokio::test]
async fn stop_runs_stops_an_apps_runs() {
    let options = CronOptions {
        kill_grace: Duration::from_millis(300),
        ..CronOptions::default()
    };
    let t = Setup::new("stop", options).await;
    t.script("slow", "echo waiting\nwhile :; do sleep 0.02; done");
    t.add(vec![t.job("slow", YEARLY, Overlap::Forbid)]);

    let id = t.cron.run_now(&t.app, &name("slow")).await.unwrap();
    until("the output", || {
        t.cron.list().unwrap()[0]
            .running
            .contains(&id)
            .then_some(())
    })
    .await;
    t.cron.stop_runs(&t.app).await.unwrap();
    let run = t.cron.get(id).unwrap().unwrap();
    assert_eq!(run.outcome, Outcome::Stopped, "{run:?}");
    assert!(t.cron.list().unwrap()[0].running.is_empty());
}

#[tokio::test]
async fn a_command_that_cannot_start_is_recorded_with_why() {
    let t = Setup::new("unstartable", CronOptions::default()).await;
    std::fs::write(t.pkg.join("bin/not-executable"), "#!/bin/sh\n").unwrap();
    let mut missing = t.job("missing", YEARLY, Overlap::Forbid);
    missing.command.program = "bin/missing".into();
    let mut plain = t.job("plain", YEARLY, Overlap::Forbid);
    plain.command.program = "bin/not-executable".into();
    t.add(vec![missing, plain]);

    let check = |outcome: &Outcome, program: &str, why: &str| match outcome {
        Outcome::FailedToStart { error } => {
            let path = t.pkg.join(program);
            assert!(error.starts_with(&path.display().to_string()), "{error}");
            assert!(error.contains(why), "{error}");
        }
        other => panic!("expected a failure to start, got {other:?}"),
    };
    let id = t.cron.run_now(&t.app, &name("missing")).await.unwrap();
    let run = t.cron.wait(id).await.unwrap();
    check(&run.outcome, "bin/missing", "No such file or directory");
    assert!(run.outcome.to_string().starts_with("failed to start: "));
    let id = t.cron.run_now(&t.app, &name("plain")).await.unwrap();
    check(
        &t.cron.wait(id).await.unwrap().outcome,
        "bin/not-executable",
        "Permission denied",
    );

    let unknown = t.cron.run_now(&t.app, &name("nope")).await.unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "app has no cron job \"nope\"; its jobs: missing, plain"
    );
    let unknown = t
        .cron
        .run_now(&name("other"), &name("nope"))
        .await
        .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "other has no cron jobs: is it installed?"
    );
    let mut bad = t.job("bad", YEARLY, Overlap::Forbid);
    bad.schedule = "61 * * * * *".into();
    let refused = t.cron.add(t.app.clone(), t.pkg.clone(), vec![bad]);
    assert!(
        matches!(refused, Err(CronError::Schedule { .. })),
        "{refused:?}"
    );
    assert_eq!(
        t.cron.list().unwrap().len(),
        2,
        "a refused add changes nothing"
    );
}

#[tokio::test]
async fn history_keeps_the_newest_runs_of_each_job() {
    let options = CronOptions {
        keep_runs: 3,
        ..CronOptions::default()
    };
    let t = Setup::new("prune", options).await;
    t.script("count", "echo run");
    t.add(vec![
        t.job("count", YEARLY, Overlap::Forbid),
        t.job("other", YEARLY, Overlap::Forbid),
    ]);
    std::fs::copy(t.pkg.join("bin/count"), t.pkg.join("bin/other")).unwrap();

    let other = t.cron.run_now(&t.app, &name("other")).await.unwrap();
    t.cron.wait(other).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = t.cron.run_now(&t.app, &name("count")).await.unwrap();
        t.cron.wait(id).await.unwrap();
        ids.push(id);
    }
    let kept: Vec<_> = t.history("count").iter().map(|r| r.id).collect();
    assert_eq!(kept, [ids[4], ids[3], ids[2]]);
    assert_eq!(t.history("other").len(), 1);
    assert!(t.cron.get(ids[0]).unwrap().is_none());
    assert_eq!(t.cron.history(&t.app, None, 2).unwrap().len(), 2);
    assert!(matches!(
        t.cron.wait(ids[0]).await,
        Err(CronError::UnknownRun { .. })
    ));
}

#[tokio::test]
async fn shutdown_lets_runs_finish_within_its_grace_then_interrupts_them() {
    let options = CronOptions {
        kill_grace: Duration::from_millis(300),
        ..CronOptions::default()
    };
    let t = Setup::new("shutdown", options).await;
    t.script("quick", "while [ ! -e release ]; do sleep 0.02; done");
    t.script("slow", "while :; do sleep 0.02; done");
    t.add(vec![
        t.job("quick", YEARLY, Overlap::Forbid),
        t.job("slow", YEARLY, Overlap::Forbid),
    ]);
    let quick = t.cron.run_now(&t.app, &name("quick")).await.unwrap();
    let slow = t.cron.run_now(&t.app, &name("slow")).await.unwrap();

    let cron = t.cron.clone();
    let shutdown = tokio::spawn(async move { cron.shutdown(Duration::from_secs(2)).await });
    until("shutdown to begin", || {
        // An app without jobs, added only to see whether the scheduler still takes one.
        matches!(
            t.cron.add(name("probe"), t.pkg.clone(), Vec::new()),
            Err(CronError::ShuttingDown)
        )
        .then_some(())
    })
    .await;
    assert!(matches!(
        t.cron.run_now(&t.app, &name("quick")).await,
        Err(CronError::ShuttingDown)
    ));
    std::fs::write(t.pkg.join("release"), "").unwrap();
    shutdown.await.unwrap();

    let quick = t.cron.get(quick).unwrap().unwrap();
    assert_eq!(quick.outcome, Outcome::Exited { code: 0 });
    let slow = t.cron.get(slow).unwrap().unwrap();
    assert_eq!(
        slow.outcome.to_string(),
        "interrupted: agent shut down",
        "{slow:?}"
    );
    assert!(gone(slow.pid.unwrap()));
    assert!(matches!(
        t.cron.add(t.app.clone(), t.pkg.clone(), vec![]),
        Err(CronError::ShuttingDown)
    ));
}

/// The agent is killed while a job runs: its runtime goes away without any shutdown, leaving
/// the job's process running and its row saying so. The next agent stops the process and
/// records the run as interrupted.
#[test]
fn a_run_left_by_a_killed_agent_is_interrupted_at_the_next_start() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let (t, id, pid) = first.block_on(async {
        let t = Setup::new("recover", CronOptions::default()).await;
        t.script(
            "slow",
            "echo $$ > job.pid\nwhile [ ! -e release ]; do sleep 0.02; done",
        );
        t.add(vec![t.job("slow", YEARLY, Overlap::Forbid)]);
        let id = t.cron.run_now(&t.app, &name("slow")).await.unwrap();
        until("the job to start", || {
            t.cron.list().unwrap()[0]
                .running
                .contains(&id)
                .then_some(())
        })
        .await;
        let pid = t.cron.get(id).unwrap().unwrap().pid.unwrap();
        (t, id, pid)
    });
    first.shutdown_background();
    assert!(!gone(pid), "the job outlives the agent's runtime");
    let Setup { dir, data, .. } = t;

    runtime().block_on(async {
        let options = CronOptions {
            kill_grace: Duration::from_millis(300),
            ..CronOptions::default()
        };
        let state = State::open(&data.database()).unwrap();
        let cron = Cron::open(data.clone(), state, options).await.unwrap();
        let run = cron.get(id).unwrap().unwrap();
        assert_eq!(run.outcome.to_string(), "interrupted: agent restarted");
        assert_eq!(run.duration, None);
        assert!(gone(pid), "the next agent stops what is left of the run");
        cron.shutdown(Duration::from_secs(1)).await;
    });
    drop(dir);
}

// ---- helpers ----

struct Setup {
    dir: Scratch,
    data: DataDir,
    app: Name,
    /// The package's version directory.
    pkg: PathBuf,
    cron: Cron,
}

impl Setup {
    async fn new(test: &str, options: CronOptions) -> Setup {
        let dir = Scratch::new(&format!("cron-{test}"));
        let data = DataDir::create(dir.0.join("data")).unwrap();
        let app = name("app");
        let pkg = data.version(&app, &"1.0.0".parse().unwrap());
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::create_dir_all(data.data(&app)).unwrap();
        let state = State::open(&data.database()).unwrap();
        let cron = Cron::open(data.clone(), state, options).await.unwrap();
        Setup {
            dir,
            data,
            app,
            pkg,
            cron,
        }
    }

    /// Writes `bin/NAME`, a shell script with `body`.
    fn script(&self, name: &str, body: &str) {
        let path = self.pkg.join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A job running `bin/NAME`.
    fn job(&self, job: &str, schedule: &str, overlap: Overlap) -> CronJob {
        CronJob {
            name: name(job),
            schedule: schedule.to_owned(),
            command: Command {
                program: format!("bin/{job}"),
                args: Vec::new(),
            },
            overlap,
            timeout: Duration::from_secs(60),
        }
    }

    fn add(&self, jobs: Vec<CronJob>) {
        self.cron
            .add(self.app.clone(), self.pkg.clone(), jobs)
            .unwrap();
    }

    fn history(&self, job: &str) -> Vec<RunRecord> {
        self.cron
            .history(&self.app, Some(&name(job)), 1000)
            .unwrap()
    }
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// Polls `f` until it gives a value, failing the test after 20 seconds.
async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The process no longer runs: it does not exist, or is a zombie nobody reaped yet.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}
