//! A Wrap-X binary run as a child process on port 0: its JSON log lines are read from its
//! stdout (and echoed to the test's output), and the addresses it reports having bound are
//! read back from them, so no port is chosen before the process binds it.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::eventually;

/// A running child process, killed when dropped.
pub struct Process {
    pub child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Process {
    /// Spawns `cmd` with JSON logs on a piped stdout. Its listen settings should name port 0.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.env("WRAPX_LOG__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the binary");
        let stdout = child.stdout.take().expect("its stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        // Reads to the end, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                println!("{line}");
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(value);
                }
            }
        });
        Self { child, logs }
    }

    /// The address in field `field` of the first log line whose message is `message`.
    pub async fn logged_addr(&self, message: &str, field: &str, within: Duration) -> SocketAddr {
        eventually(
            &format!("the log line \"{message}\" with its {field}"),
            within,
            || async {
                self.logs.lock().unwrap().iter().find_map(|line| {
                    (line["message"] == message)
                        .then(|| line[field].as_str()?.parse().ok())
                        .flatten()
                })
            },
        )
        .await
    }

    /// Every JSON log line so far, oldest first.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// The first log line `matches` accepts, waiting up to `within` for it.
    pub async fn logged(
        &self,
        what: &str,
        within: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(&format!("the log line {what}"), within, || async {
            self.logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| matches(l))
                .cloned()
        })
        .await
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
