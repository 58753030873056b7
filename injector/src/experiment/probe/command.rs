//! The command probe: runs a program (in the probe's netns) and compares its exit code; killed
//! at its timeout.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::Outcome;
use crate::{
    experiment::file::{duration, ferr},
    fault::spec::FieldError,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The program and its arguments: [curl, -sf, http://10.42.2.2:8080/].
    pub run: Vec<String>,
    /// The exit code that passes (default 0).
    #[serde(default)]
    pub exit: Option<i32>,
    /// Killed (and failed) after this (default 5s).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Command {
    pub argv: Vec<String>,
    pub exit: i32,
    pub timeout: Duration,
}

impl CommandSpec {
    pub fn validate(&self, at: &str) -> Result<Command, FieldError> {
        if self.run.is_empty() || self.run[0].is_empty() {
            return Err(ferr(
                format!("{at}.run"),
                "give the program and its arguments, e.g. [curl, -sf, http://10.42.2.2:8080/]",
            ));
        }
        Ok(Command {
            argv: self.run.clone(),
            exit: self.exit.unwrap_or(0),
            timeout: duration(
                &format!("{at}.timeout"),
                self.timeout.as_deref().unwrap_or("5s"),
                (Duration::from_millis(1), "1ms"),
                (Duration::from_secs(600), "10m"),
            )?,
        })
    }
}

impl Command {
    pub fn threshold(&self) -> String {
        format!("exit {}", self.exit)
    }

    pub fn run(&self) -> Outcome {
        let fail = |detail: String| Outcome {
            value: None,
            ok: false,
            latency_ms: None,
            detail,
        };
        let mut child = match std::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return fail(format!("cannot run {}: {e}", self.argv[0])),
        };
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    let code = st.code().unwrap_or(-1);
                    return Outcome {
                        value: Some(f64::from(code)),
                        ok: code == self.exit,
                        latency_ms: Some(start.elapsed().as_secs_f64() * 1e3),
                        detail: match st.code() {
                            Some(c) => format!("exit {c}"),
                            None => format!("{st}"),
                        },
                    };
                }
                Ok(None) if start.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return fail(format!("killed after {}ms", self.timeout.as_millis()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return fail(format!("waiting for {}: {e}", self.argv[0])),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(run: &[&str], timeout: &str) -> Command {
        CommandSpec {
            run: run.iter().map(|s| s.to_string()).collect(),
            exit: None,
            timeout: Some(timeout.into()),
        }
        .validate("c")
        .unwrap()
    }

    #[test]
    fn exit_codes_are_compared_and_a_slow_command_is_killed() {
        let o = cmd(&["true"], "5s").run();
        assert!(o.ok && o.value == Some(0.0), "{o:?}");
        let o = cmd(&["sh", "-c", "exit 3"], "5s").run();
        assert!(
            !o.ok && o.value == Some(3.0) && o.detail == "exit 3",
            "{o:?}"
        );
        let o = cmd(&["sleep", "5"], "100ms").run();
        assert!(!o.ok && o.detail.starts_with("killed after 100ms"), "{o:?}");
        let o = cmd(&["/nonexistent/x"], "1s").run();
        assert!(
            !o.ok && o.detail.starts_with("cannot run /nonexistent/x"),
            "{o:?}"
        );
    }
}
