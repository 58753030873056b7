//! Every change is all-or-nothing across a crash: the daemon is killed (SIGKILL, by a failpoint
//! compiled in with the `failpoints` feature) at each step of add, replace, remove, clear and
//! reap. The kernel must then run exactly the old set (killed before the flip) or exactly the new
//! one (after it), the records must name exactly what the kernel runs, and after a restart the API,
//! the records and the kernel maps agree.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    require_root,
};

/// The steps of a commit, in order; the flip comes between "filled" and "flipped".
const STEPS: [&str; 6] = [
    "records",
    "manifest",
    "filled",
    "flipped",
    "cleared",
    "collected",
];

fn committed(step: &str) -> bool {
    STEPS.iter().position(|s| *s == step) >= STEPS.iter().position(|s| *s == "flipped")
}

/// `(name, lifetime in hours)` of a set, compared with remaining seconds to the hour.
fn same(got: &[(String, f64)], want: &[(&str, f64)]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|((n, left), (wn, h))| n == wn && (*left - h * 3600.0).abs() < 600.0)
}

struct Case {
    op: &'static str,
    setup: &'static str,
    old: &'static [(&'static str, f64)],
    new: &'static [(&'static str, f64)],
}

const A1: &str = r#"{"name":"a","to":["10.42.1.3"],"blackhole":true,"for":"1h"}"#;
const B2: &str = r#"{"name":"b","to":["10.42.1.4"],"loss":"10%","for":"2h"}"#;

fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "add",
            setup: A1,
            old: &[("a", 1.0)],
            new: &[("a", 1.0), ("b", 2.0)],
        },
        Case {
            op: "replace",
            setup: A1,
            old: &[("a", 1.0)],
            new: &[("a", 3.0)],
        },
        Case {
            op: "remove",
            setup: "both",
            old: &[("a", 1.0), ("b", 2.0)],
            new: &[("a", 1.0)],
        },
        Case {
            op: "clear",
            setup: "both",
            old: &[("a", 1.0), ("b", 2.0)],
            new: &[],
        },
        Case {
            op: "reap",
            setup: "reap",
            // The short fault has ended by the time anyone looks: the kernel ignores it, and a
            // restarted daemon drops it; both sets show as `a` alone to the API.
            old: &[("a", 1.0), ("r", 0.0)],
            new: &[("a", 1.0)],
        },
    ]
}

fn run(d: &Daemon, c: &Case) {
    match c.op {
        "add" => {
            let _ = d.cli(&["apply", "-f", "-"], &format!("[{B2}]"));
        }
        "replace" => {
            let _ = d.cli(
                &[
                    "fault",
                    "add",
                    "a",
                    "--to",
                    "10.42.1.3",
                    "--blackhole",
                    "--for",
                    "3h",
                    "--replace",
                ],
                "",
            );
        }
        "remove" => {
            let _ = d.cli(&["fault", "rm", "b"], "");
        }
        "clear" => {
            let _ = d.cli(&["fault", "rm", "--all"], "");
        }
        // The once-a-second tick reaps the short fault.
        "reap" => {}
        _ => unreachable!(),
    }
}

#[test]
fn a_crash_at_any_step_of_a_change_leaves_the_old_set_or_the_new_one() {
    require_root();
    let l = Lab::up(&lab::run_prefix("crash"), 3).unwrap();
    let fp = PathBuf::from(format!("/tmp/{}-failpoint", lab::run_prefix("crash")));
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(fp.clone());
    let fp_s = fp.to_string_lossy().to_string();
    for c in cases() {
        for step in STEPS {
            let at = format!("{}:{step}", c.op);
            std::fs::write(&fp, "").unwrap();
            let mut d = Daemon::start_env(
                &injector_bin(),
                l.node(1),
                &[],
                &[("INJECTOR_FAILPOINT_FILE", &fp_s)],
            )
            .unwrap();
            match c.setup {
                "both" => d.apply(&format!("[{A1},{B2}]")).unwrap(),
                "reap" => d
                    .apply(&format!(
                        r#"[{A1},{{"name":"r","to":["10.42.1.4"],"blackhole":true,"for":"1500ms"}}]"#
                    ))
                    .unwrap(),
                one => d.apply(&format!("[{one}]")).unwrap(),
            };
            std::fs::write(&fp, &at).unwrap();
            run(&d, &c);
            let st = d.wait_exit(Duration::from_secs(10)).unwrap_or_else(|e| {
                panic!("{at}: the failpoint did not kill the daemon (is the binary built with --features failpoints?): {e}")
            });
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&st),
                Some(libc::SIGKILL),
                "{at}"
            );
            std::fs::write(&fp, "").unwrap();
            // What the kernel runs right after the crash, named by the live generation's records.
            let (live, _) = d.kernel_faults();
            let want = if committed(step) { c.new } else { c.old };
            if c.op != "reap" {
                assert!(
                    same(&live, want),
                    "{at}: the kernel runs {live:?}, expected {want:?}"
                );
            } else {
                let names: BTreeSet<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
                let want: BTreeSet<&str> = want.iter().map(|(n, _)| *n).collect();
                assert_eq!(names, want, "{at}: the kernel runs {live:?}");
            }
            // A restarted daemon adopts exactly that, and kernel, records and API agree.
            let d = d.restart().unwrap();
            let (live, records) = d.kernel_faults();
            let listed = d.api_faults();
            let want: Vec<(&str, f64)> = want
                .iter()
                .filter(|(n, _)| c.op != "reap" || *n != "r")
                .copied()
                .collect();
            assert!(
                same(&listed, &want),
                "{at}: after the restart the API lists {listed:?}, expected {want:?}"
            );
            assert_eq!(
                live.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                listed.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "{at}: kernel and API disagree"
            );
            assert_eq!(records, listed.len() as u64, "{at}: records left over");
            d.stop().unwrap();
        }
    }
}
