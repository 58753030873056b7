//! The built `injector` binary against a daemon in the lab: every subcommand, every output format
//! (JSON and YAML parsed back), a YAML file of several faults applied and removed, and a table of
//! malformed inputs, each with its message and exit code, after which nothing has changed.

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    require_root,
};
use serde_json::Value;

/// The daemon's fault list, remaining time aside.
fn faults(d: &Daemon) -> Value {
    let mut v: Value =
        serde_json::from_str(&d.cli_ok(&["fault", "ls", "-o", "json"], "").unwrap()).unwrap();
    for f in v.as_array_mut().unwrap() {
        f.as_object_mut().unwrap().remove("remaining_s");
    }
    v
}

#[test]
fn every_subcommand_and_output_format() {
    require_root();
    let l = Lab::up(&lab::run_prefix("cl"), 2).unwrap();
    let d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));

    let out = d
        .cli_ok(
            &[
                "fault",
                "add",
                "bh",
                "--to",
                &b.ip.to_string(),
                "--blackhole",
                "--for",
                "5m",
            ],
            "",
        )
        .unwrap();
    assert_eq!(out, "created: bh\n");
    let out = d
        .cli_ok(
            &[
                "fault",
                "add",
                "db",
                "--from",
                &a.ip.to_string(),
                "--to",
                &format!("{},{}", c.ip, l.pod(2, 2).ip),
                "--proto",
                "tcp",
                "--dport",
                "5432,8000-8080",
                "--loss",
                "5%",
                "--flows",
                "20%",
                "--seed",
                "7",
                "--both-ways",
                "--dry-run",
                "-o",
                "json",
            ],
            "",
        )
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["created"][0],
        "db"
    );
    assert_eq!(l.ping(a, b.ip.into(), 3).unwrap(), 0);

    // ls: table, JSON, YAML; the same faults each way.
    let table = d.cli_ok(&["fault", "ls"], "").unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines.len() == 3, "{table}");
    let bh = lines.iter().find(|l| l.starts_with("bh ")).unwrap();
    assert!(
        bh.contains("blackhole") && bh.contains(&format!("any -> {}", b.ip)),
        "{table}"
    );
    assert!(
        table.contains("loss 5% (dry run)")
            && table.contains(":5432,8000-8080")
            && table.contains("<->"),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&d.cli_ok(&["fault", "ls", "-o", "json"], "").unwrap()).unwrap();
    let yaml: Value =
        serde_saphyr::from_str(&d.cli_ok(&["fault", "ls", "-o", "yaml"], "").unwrap()).unwrap();
    let names = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&json), ["bh", "db"]);
    assert_eq!(names(&yaml), names(&json));
    assert_eq!(json[0]["counters"]["veth_ingress"]["dropped"]["packets"], 3);
    assert_eq!(yaml[1]["spec"]["dport"], json[1]["spec"]["dport"]);

    // get
    let one: Value =
        serde_json::from_str(&d.cli_ok(&["fault", "get", "db", "-o", "json"], "").unwrap())
            .unwrap();
    assert_eq!(
        (one["spec"]["flows"].as_str(), one["spec"]["seed"].as_u64()),
        (Some("20%"), Some(7))
    );
    let one: Value =
        serde_saphyr::from_str(&d.cli_ok(&["fault", "get", "bh", "-o", "yaml"], "").unwrap())
            .unwrap();
    assert_eq!(one["spec"]["blackhole"], true);
    assert!(
        d.cli_ok(&["fault", "get", "bh"], "")
            .unwrap()
            .contains("blackhole")
    );

    // status
    let st: Value =
        serde_json::from_str(&d.cli_ok(&["status", "-o", "json"], "").unwrap()).unwrap();
    assert_eq!(st["armed"], true);
    assert_eq!(st["interfaces"].as_object().unwrap().len(), 4);
    let st: Value =
        serde_saphyr::from_str(&d.cli_ok(&["status", "-o", "yaml"], "").unwrap()).unwrap();
    assert_eq!(st["faults"].as_array().unwrap().len(), 2);
    let table = d.cli_ok(&["status"], "").unwrap();
    assert!(
        table.contains("INTERFACE") && table.contains("flannel.1") && table.contains("armed"),
        "{table}"
    );

    // abort and arm
    assert_eq!(
        d.cli_ok(&["abort"], "").unwrap(),
        "aborted: every fault is disarmed (`injector arm` re-arms)\n"
    );
    assert_eq!(l.ping(a, b.ip.into(), 3).unwrap(), 3, "aborted");
    assert!(d.cli_ok(&["status"], "").unwrap().contains("DISARMED"));
    let armed: Value =
        serde_json::from_str(&d.cli_ok(&["arm", "-o", "json"], "").unwrap()).unwrap();
    assert_eq!(armed["armed"], true);
    assert_eq!(l.ping(a, b.ip.into(), 3).unwrap(), 0, "re-armed");

    // top, two refreshes with rates
    let top = d
        .cli_ok(&["top", "--count", "2", "--interval", "200ms"], "")
        .unwrap();
    assert_eq!(
        top.matches("injector top  armed  2 faults").count(),
        2,
        "{top}"
    );
    // Rate columns come from the action table too: `<column>/s`.
    assert!(top.contains("DROPPED/s") && top.contains("bh "), "{top}");

    // rm
    assert_eq!(
        d.cli_ok(&["fault", "rm", "db"], "").unwrap(),
        "deleted db\n"
    );
    assert_eq!(
        d.cli_ok(&["fault", "rm", "--all"], "").unwrap(),
        "deleted 1 faults\n"
    );
    assert_eq!(d.cli_ok(&["fault", "ls"], "").unwrap(), "no faults\n");
    assert_eq!(l.ping(a, b.ip.into(), 3).unwrap(), 3);

    // completions and help
    for shell in ["bash", "zsh", "fish"] {
        assert!(
            d.cli_ok(&["completions", shell], "")
                .unwrap()
                .contains("fault"),
            "{shell}"
        );
    }
    let help = d.cli_ok(&["fault", "add", "--help"], "").unwrap();
    assert!(
        help.contains("Examples:") && help.contains("--jitter"),
        "{help}"
    );
}

#[test]
fn a_yaml_file_of_several_faults_is_applied_and_removed() {
    require_root();
    let l = Lab::up(&lab::run_prefix("cy"), 2).unwrap();
    let d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let (a, b, c, e) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1), l.pod(2, 2));
    let yaml = format!(
        "# three faults, as an SRE writes them\nfaults:\n  - name: bh-b\n    to: [{b}]\n    blackhole: true\n    for: 5m\n  - name: loss-c\n    from: [{a}]\n    to: [{c}]\n    proto: icmp\n    loss: 100%\n    for: 5m\n  - name: shadow-e\n    to: [{e}]\n    blackhole: true\n    dry_run: true\n    for: 5m\n",
        b = b.ip,
        a = a.ip,
        c = c.ip,
        e = e.ip
    );
    let file = std::env::temp_dir().join(format!("{}-faults.yaml", l.prefix));
    std::fs::write(&file, &yaml).unwrap();
    let applied = d.cli_ok(&["apply", "-f", file.to_str().unwrap()], "");
    let _ = std::fs::remove_file(&file);
    assert_eq!(applied.unwrap(), "created: bh-b, loss-c, shadow-e\n");
    assert_eq!(l.ping(a, b.ip.into(), 2).unwrap(), 0);
    assert_eq!(l.ping(a, c.ip.into(), 2).unwrap(), 0);
    assert_eq!(
        l.ping(a, e.ip.into(), 2).unwrap(),
        2,
        "dry run touches nothing"
    );
    let v = faults(&d);
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(
        v[2]["counters"]["veth_ingress"]["matched"]["packets"], 2,
        "but counts"
    );
    // The same file from stdin, as JSON, is refused whole: the names exist.
    let out = d
        .cli(
            &["apply", "-f", "-"],
            &serde_json::to_string(&serde_saphyr::from_str::<Value>(&yaml).unwrap()).unwrap(),
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("faults[0].name: a fault named 'bh-b' exists")
    );
    // With --replace it goes through.
    d.cli_ok(&["apply", "--replace", "-f", "-"], &yaml).unwrap();
    d.cli_ok(&["fault", "rm", "bh-b", "loss-c", "shadow-e"], "")
        .unwrap();
    assert_eq!(faults(&d), Value::Array(vec![]));
    assert_eq!(l.ping(a, b.ip.into(), 2).unwrap(), 2);
    assert_eq!(l.ping(a, c.ip.into(), 2).unwrap(), 2);
}

#[test]
fn malformed_input_is_refused_with_its_message_and_changes_nothing() {
    require_root();
    let l = Lab::up(&lab::run_prefix("cb"), 1).unwrap();
    let d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    d.cli_ok(
        &["fault", "add", "keep", "--to", "10.42.1.3", "--loss", "5%"],
        "",
    )
    .unwrap();
    let before = faults(&d);
    let add = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["fault", "add", "x", "--to", "10.42.1.3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut cases: Vec<(Vec<String>, &str, &str, i32)> = vec![
        (
            add(&["--loss", "150%"]),
            "",
            "--loss: '150%': must be between 0% and 100%",
            1,
        ),
        (
            add(&["--loss", "5"]),
            "",
            "--loss: '5' is not a percentage; write e.g. 5% or 0.1%",
            1,
        ),
        (
            owned(&["fault", "add", "x", "--to", "10.42.1.3/24", "--loss", "5%"]),
            "",
            "--to: '10.42.1.3/24' has host bits set; did you mean 10.42.1.0/24?",
            1,
        ),
        (
            owned(&["fault", "add", "x", "--to", "pod-a", "--loss", "5%"]),
            "",
            "--to: 'pod-a' is not an IP address or CIDR",
            1,
        ),
        (
            add(&["--proto", "tcp", "--dport", "70000", "--loss", "5%"]),
            "",
            "--dport: '70000': ports are 0-65535",
            1,
        ),
        (
            add(&["--proto", "tcp", "--dport", "9000-8000", "--loss", "5%"]),
            "",
            "--dport: '9000-8000': range is backwards; write 8000-9000",
            1,
        ),
        (
            add(&["--dport", "80", "--loss", "5%"]),
            "",
            "--proto: port ranges need proto tcp or udp",
            1,
        ),
        (
            add(&["--proto", "sctp", "--loss", "5%"]),
            "",
            "--proto: 'sctp': use tcp, udp, icmp or any",
            1,
        ),
        (
            add(&[]),
            "",
            "--loss/--blackhole/--delay/--reject/--duplicate/--corrupt/--rate/--dns: give one of loss",
            1,
        ),
        (
            add(&["--loss", "5%", "--blackhole"]),
            "",
            "--blackhole: a fault has one action (or loss with delay) and loss is given too; for \
             loss and blackhole together use two faults with the same match",
            1,
        ),
        (
            add(&["--duplicate", "5%", "--corrupt", "1%"]),
            "",
            "--corrupt: a fault has one action (or loss with delay) and duplicate is given too",
            1,
        ),
        (
            add(&["--reorder", "25%", "--loss", "5%"]),
            "",
            "--reorder: '25%': sends that share without the delay, so it needs one: add delay",
            1,
        ),
        (
            add(&["--loss", "90%", "--burst", "2"]),
            "",
            "--burst: '2': with loss 90% the mean burst is at least loss / (1 - loss) = 9.000",
            1,
        ),
        (
            add(&["--loss-model", "ge:1%"]),
            "",
            "--loss-model: 'ge:1%': write ge:p,r[,h[,k]] in percent",
            1,
        ),
        (
            add(&["--blackhole", "--pulse", "30s"]),
            "",
            "--pulse: '30s': write ON/PERIOD, e.g. 10s/30s",
            1,
        ),
        (
            add(&["--reject", "--reject-with", "tcp-reset"]),
            "",
            "--reject-with: tcp-reset answers only TCP: set proto tcp",
            1,
        ),
        (
            add(&["--loss", "5%", "--for", "forever"]),
            "",
            "--for: 'forever' is not a duration",
            1,
        ),
        (
            add(&["--loss", "5%", "--for", "48h"]),
            "",
            "--for: '48h' must be between 1ms and 24h",
            1,
        ),
        (
            add(&["--loss", "5%", "--flows", "0%"]),
            "",
            "--flows: '0%': the smallest share of flows is 0.0001%",
            1,
        ),
        (
            add(&["--loss", "5%", "--flows", "0.00004%"]),
            "",
            "--flows: '0.00004%': the smallest share of flows is 0.0001% (1 in a million)",
            1,
        ),
        (
            add(&["--loss", "5%", "--jitter", "1ms"]),
            "",
            "--jitter: jitter needs a delay",
            1,
        ),
        (
            owned(&[
                "fault",
                "add",
                "Bad Name",
                "--to",
                "10.42.1.3",
                "--loss",
                "5%",
            ]),
            "",
            "NAME: 'Bad Name': use 1-63 characters",
            1,
        ),
        (
            owned(&["fault", "add", "keep", "--to", "10.42.1.3", "--loss", "5%"]),
            "",
            "NAME: a fault named 'keep' exists",
            1,
        ),
        (
            owned(&["fault", "add", "x", "--to", "10.42.1.1", "--blackhole"]),
            "",
            "--to: 10.42.1.1/32 lies entirely in protected 10.42.1.1/32 (node address): nothing is left to target; name other targets, or force it",
            1,
        ),
        (
            owned(&["apply", "-f", "/nonexistent/faults.yaml"]),
            "",
            "-f: cannot read /nonexistent/faults.yaml",
            1,
        ),
        (
            owned(&["apply", "-f", "-"]),
            "faults: [name: x",
            "-f -: not YAML: line 1 column 9: unclosed bracket",
            1,
        ),
        (
            owned(&["apply", "-f", "-"]),
            "- name: x\n  to: [10.42.1.3]\n  loss: 5%\n  for: 1m\n  colour: red\n",
            "-f -: faults[0]: unknown field `colour`",
            1,
        ),
        (
            owned(&["apply", "-f", "-"]),
            "[{\"name\":\"x\",\"to\":[\"10.42.1.3\"],\"loss\":\"5%\",\"for\":\"1m\"},{\"name\":\"y\",\"to\":[\"10.42.1.3\"],\"loss\":\"500%\",\"for\":\"1m\"}]",
            "faults[1].loss: '500%': must be between 0% and 100%",
            1,
        ),
        (
            owned(&["fault", "rm", "keep", "nope"]),
            "",
            "name: no fault named 'nope'",
            1,
        ),
        (
            owned(&["fault", "rm", "nope"]),
            "",
            "name: no fault named 'nope'",
            1,
        ),
        (
            owned(&["fault", "get", "nope"]),
            "",
            "name: no fault named 'nope'",
            1,
        ),
        (
            owned(&["top", "--interval", "1x"]),
            "",
            "--interval: '1x' is not a duration",
            1,
        ),
        (
            owned(&["fault", "add"]),
            "",
            "required arguments were not provided",
            2,
        ),
        (
            owned(&["fault", "ls", "-o", "xml"]),
            "",
            "invalid value 'xml' for '--output <OUTPUT>'",
            2,
        ),
    ];
    if !injector::kernel::features::fq() {
        cases.push((
            add(&["--delay", "100ms"]),
            "",
            "--delay: the fq qdisc is unavailable on this kernel",
            1,
        ));
    }
    assert!(cases.len() >= 15);
    for (args, stdin, msg, code) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = d.cli(&a, stdin).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{a:?}: {err}");
        assert!(err.contains(msg), "{a:?}: want '{msg}' in: {err}");
        assert!(
            out.stdout.is_empty(),
            "{a:?}: printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !err.contains("panicked") && !err.contains("stack backtrace"),
            "{a:?}: {err}"
        );
        assert_eq!(faults(&d), before, "{a:?} changed the faults");
    }
    // A daemon that is not running: one clear line, exit 3.
    let out = std::process::Command::new(injector_bin())
        .args(["--socket", "/nonexistent.sock", "fault", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("injector: cannot reach the daemon at /nonexistent.sock"),
        "{err}"
    );
}

#[test]
fn daemon_errors_name_its_flags_and_its_help_has_no_client_flags() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(injector_bin())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Refused before anything is loaded (no root needed): the flag is --api-token-file.
    let short = std::env::temp_dir().join(format!("{}.token", lab::run_prefix("cf")));
    std::fs::write(&short, "short\n").unwrap();
    std::fs::set_permissions(&short, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let missing = "/nonexistent/injector.token";
    for (file, want) in [
        (
            missing,
            "--api-token-file: cannot read /nonexistent/injector.token",
        ),
        (short.to_str().unwrap(), "characters; use at least 16"),
    ] {
        let (code, _, err) = run(&[
            "daemon",
            "--bpffs",
            "/sys/fs/bpf/unused-cf",
            "--listen",
            "127.0.0.1:0",
            "--api-token-file",
            file,
        ]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(want), "want '{want}' in: {err}");
        assert!(
            err.contains("--api-token-file") && !err.contains("--token-file:"),
            "{err}"
        );
    }
    let _ = std::fs::remove_file(&short);
    assert!(!std::path::Path::new("/sys/fs/bpf/unused-cf").exists());

    // The daemon's help lists its own flags, not the CLI's TCP ones.
    let (code, help, _) = run(&["daemon", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        help.contains("--api-token-file") && help.contains("--socket"),
        "{help}"
    );
    assert!(
        !help.contains("--addr") && !help.contains("--token-file <"),
        "{help}"
    );
    let (code, _, err) = run(&["daemon", "--addr", "127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
    // Where the CLI talks to the API they are there, also after a nested subcommand.
    for cmd in [&["status", "--help"][..], &["fault", "ls", "--help"]] {
        let (code, help, _) = run(cmd);
        assert_eq!(code, Some(0));
        assert!(
            help.contains("--addr") && help.contains("--token-file"),
            "{cmd:?}: {help}"
        );
    }
    let (code, _, err) = run(&["fault", "ls", "--addr", "127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--addr: a TCP daemon needs --token-file"),
        "{err}"
    );
}
