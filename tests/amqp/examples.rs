//! Runs the tutorial programs in `examples/` against the test broker.
//!
//! `cargo test` builds the examples, but `cargo test --test amqp` does not, so the first test
//! here runs `cargo build --examples` (a no-op when they are up to date) for the same profile.

use crate::common::start_broker;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// `target/<profile>/examples`, next to the `deps` directory holding this test binary.
fn examples_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").to_path_buf();
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "--examples", "--quiet"]).current_dir(env!("CARGO_MANIFEST_DIR")).stdin(Stdio::null());
            match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => {}
                Some("release") => {
                    cmd.arg("--release");
                }
                Some(other) => {
                    cmd.args(["--profile", other]);
                }
                None => {}
            }
            // Build into the same target directory as this test binary.
            if let Some(target) = profile_dir.parent() {
                cmd.arg("--target-dir").arg(target);
            }
            let status = cmd.status().expect("run cargo build --examples");
            assert!(status.success(), "cargo build --examples failed");
            profile_dir.join("examples")
        })
        .clone()
}

/// Runs an example with `AMQP_URL` pointing at the test broker; returns its stdout after
/// asserting a zero exit status within [`CHILD_TIMEOUT`].
fn run_example(name: &str) -> String {
    let broker = start_broker();
    let path = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "example binary {path:?} missing");
    let mut child = Command::new(&path)
        .env("AMQP_URL", broker.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {path:?}: {e}"));
    // Drain the pipes on threads so a chatty child cannot block.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    match status {
        None => panic!("example {name} killed after {CHILD_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
        Some(s) => assert!(s.success(), "example {name} failed: {s}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
    }
    stdout
}

#[track_caller]
fn assert_lines(stdout: &str, expected: &[&str]) {
    let lines: Vec<&str> = stdout.lines().collect();
    for e in expected {
        assert!(lines.contains(e), "missing line {e:?} in output:\n{stdout}");
    }
}

#[test]
fn example_hello_world() {
    let out = run_example("hello_world");
    assert_lines(&out, &[" [x] Sent 'Hello World!'", " [x] Received 'Hello World!'"]);
}

#[test]
fn example_work_queues() {
    let out = run_example("work_queues");
    assert_lines(&out, &["All 8 tasks done"]);
    for i in 1..=8 {
        let task = format!("Task {i}{}", ".".repeat(i % 4 + 1));
        let received = out.lines().filter(|l| l.ends_with(&format!("Received '{task}'"))).count();
        assert_eq!(received, 1, "task {task:?} received {received} times:\n{out}");
    }
    assert_eq!(out.lines().filter(|l| l.ends_with("] Done")).count(), 8);
}

#[test]
fn example_publish_subscribe() {
    let out = run_example("publish_subscribe");
    assert_lines(
        &out,
        &[
            " [subscriber 1] 'info: Hello World!'",
            " [subscriber 2] 'info: Hello World!'",
            " [subscriber 1] 'error: it broke'",
            " [subscriber 2] 'error: it broke'",
            "Both subscribers received all 3 messages",
        ],
    );
}

#[test]
fn example_routing() {
    let out = run_example("routing");
    assert_lines(
        &out,
        &[
            " [errors] error:'disk full'",
            " [all] info:'starting up'",
            " [all] warning:'disk at 91%'",
            " [all] error:'disk full'",
            "Routing by severity worked",
        ],
    );
    assert!(!out.contains("] debug:"), "nobody is bound to debug:\n{out}");
}

#[test]
fn example_topics() {
    let out = run_example("topics");
    assert_lines(
        &out,
        &[
            " [Q1 *.orange.*] quick.orange.fox:'message for quick.orange.fox'",
            " [Q2 *.*.rabbit lazy.#] lazy.pink.rabbit:'message for lazy.pink.rabbit'",
            " [Q2 *.*.rabbit lazy.#] lazy.orange.new.rabbit:'message for lazy.orange.new.rabbit'",
            "Topic routing worked",
        ],
    );
}

#[test]
fn example_rpc() {
    let out = run_example("rpc");
    assert_lines(
        &out,
        &[
            " [.] Got fib(0) = 0",
            " [.] Got fib(1) = 1",
            " [.] Got fib(10) = 55",
            " [.] Got fib(30) = 832040",
            " [.] Got fib(50) = 12586269025",
        ],
    );
}

#[test]
fn example_publisher_confirms() {
    let out = run_example("publisher_confirms");
    assert_lines(&out, &["All 600 messages confirmed"]);
    assert!(out.contains("Published 200 messages individually"), "{out}");
    assert!(out.contains("Published 200 messages in batches of 50"), "{out}");
    assert!(out.contains("Published 200 messages and handled confirms asynchronously"), "{out}");
}
