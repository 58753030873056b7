//! `injector experiment run` in the lab, against two daemons, a real Prometheus scraping them
//! (inside node1's netns, queried from there), and a real HTTP service in a pod under a client's
//! load: a hypothesis that holds, a ramp to a blackhole that is aborted, the runner SIGKILLed
//! mid-step (the kernel deadline ends its faults), bad files refused with nothing started, a dry
//! run, and the HTML report screenshotted in headless Chromium.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    poll::until,
    prometheus::Prometheus,
    require_root,
    web::{HttpLoad, HttpServer, answers},
};
use serde_json::Value;

const PORT: u16 = 8080;

struct Setup {
    lab: Lab,
    daemons: Vec<Daemon>,
    _server: HttpServer,
    _prom: Option<Prometheus>,
    /// Artifacts of this test (reports, screenshots), kept: target/experiment-lab/<test>.
    dir: PathBuf,
}

fn setup(tag: &str, nodes: usize, prometheus: bool) -> Setup {
    require_root();
    let lab = Lab::up(&lab::run_prefix(tag), 2).unwrap();
    let daemons: Vec<Daemon> = (1..=nodes as u8)
        .map(|n| Daemon::start(&injector_bin(), lab.node(n)).unwrap())
        .collect();
    let server = HttpServer::start(&lab.pod(2, 1).netns, PORT).unwrap();
    // Prometheus runs in node1's netns: node1's daemon on loopback, node2's via the underlay.
    let prom = prometheus.then(|| {
        let targets = [
            "127.0.0.1:9464".to_string(),
            format!("{}:9464", lab.node(2).underlay_ip),
        ];
        Prometheus::start(
            &lab.node(1).netns,
            "127.0.0.1:9090".parse().unwrap(),
            &targets[..nodes],
            &lab.prefix,
        )
        .unwrap()
    });
    let dir = injector_bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("experiment-lab")
        .join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    Setup {
        lab,
        daemons,
        _server: server,
        _prom: prom,
        dir,
    }
}

impl Setup {
    fn server(&self) -> SocketAddr {
        SocketAddr::new(self.lab.pod(2, 1).ip.into(), PORT)
    }

    /// The probes every experiment here uses: the service from pod n1p1, the drop rate and both
    /// daemons' scrape state from Prometheus.
    fn probes(&self) -> String {
        let n1 = &self.lab.node(1).netns;
        format!(
            r#"steady_state:
  - name: front
    netns: {client}
    http: {{url: "http://{server}/", status: 200, requests: 2, timeout: 1500ms, max_latency: 1400ms}}
  - name: drops
    netns: {n1}
    prometheus: {{url: "http://127.0.0.1:9090", query: 'sum(rate(injector_packets_total{{action="dropped"}}[5s]))', max: 1000000, if_empty: 0}}
  - name: scraped
    netns: {n1}
    prometheus: {{url: "http://127.0.0.1:9090", query: 'min(up{{job="injector"}})', min: 1}}
"#,
            client = self.lab.pod(1, 1).netns,
            server = self.server(),
        )
    }

    fn run(&self, name: &str, yaml: &str, extra: &[&str]) -> (Output, PathBuf) {
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let report = self.dir.join(name);
        let mut c = Command::new(injector_bin());
        c.args(["experiment", "run", "-f"]).arg(&file);
        for d in &self.daemons {
            c.arg("--daemon").arg(&d.socket);
        }
        let out = c.arg("--report").arg(&report).args(extra).output().unwrap();
        eprintln!(
            "--- injector experiment run {name}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, report)
    }

    /// Every daemon's faults.
    fn faults(&self) -> Vec<Value> {
        self.daemons
            .iter()
            .flat_map(|d| {
                let v: Value =
                    serde_json::from_str(&d.cli_ok(&["fault", "ls", "-o", "json"], "").unwrap())
                        .unwrap();
                v.as_array().unwrap().clone()
            })
            .collect()
    }
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path.with_extension("json")).unwrap()).unwrap()
}

#[test]
fn a_hypothesis_that_holds_under_one_percent_loss() {
    let s = setup("xh", 2, true);
    let load = HttpLoad::start(&s.lab.pod(1, 2).netns, s.server(), 4);
    let yaml = format!(
        "name: held\nhypothesis: the web service in n2p1 answers its clients while 1% of the packets to it are lost\nprobe_interval: 500ms\n{}steps:\n  - name: loss 1%\n    duration: 8s\n    faults: [{{name: web, to: [{}], proto: tcp, dport: [\"{PORT}\"], loss: 1%}}]\nabort_when: [{{probe: front, failures_in_a_row: 3}}]\nrecovery: 10s\ndeadline_margin: 2s\n",
        s.probes(),
        s.server().ip()
    );
    let (out, path) = s.run("held", &yaml, &[]);
    let (ok, failed) = load.counts();
    drop(load);
    eprintln!("load during the run: {ok} answered, {failed} failed");
    assert!(out.status.success(), "exit {}", out.status);
    let r = report(&path);
    assert_eq!(r["schema"], "injector.experiment/v1");
    assert_eq!(r["verdict"]["result"], "held", "{}", r["verdict"]);
    assert!(r["abort"].is_null());
    assert!(r["recovery"]["recovered_s"].as_f64().is_some());
    for p in r["probes"].as_array().unwrap() {
        let n = p["samples"].as_array().unwrap().len();
        assert!(n >= 5, "probe {}: {n} samples", p["name"]);
    }
    let c = r["faults"][0]["samples"].as_array().unwrap();
    let matched = c
        .iter()
        .map(|c| c["matched"].as_u64().unwrap())
        .max()
        .unwrap();
    let dropped = c
        .iter()
        .map(|c| c["dropped"].as_u64().unwrap())
        .max()
        .unwrap();
    eprintln!(
        "fault web: {matched} matched, {dropped} dropped ({:.2}%)",
        100.0 * dropped as f64 / matched.max(1) as f64
    );
    assert!(matched > 100, "{matched}");
    assert!(ok > 100, "the load ran: {ok} answered");
    assert!(s.faults().is_empty(), "{:?}", s.faults());
    // `experiment report` renders the same page from the JSON.
    let again = s.dir.join("held-again.html");
    let out = Command::new(injector_bin())
        .args(["experiment", "report"])
        .arg(path.with_extension("json"))
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(path.with_extension("html")).unwrap()
    );
}

#[test]
fn a_ramp_to_a_blackhole_is_aborted_and_traffic_restored() {
    let s = setup("xr", 2, true);
    let load = HttpLoad::start(&s.lab.pod(1, 2).netns, s.server(), 4);
    let yaml = format!(
        "name: ramp\nhypothesis: the web service in n2p1 answers while more and more of the packets to it are lost\nprobe_interval: 500ms\n{}ramp:\n  duration: 8s\n  fault: {{name: web, to: [{}], proto: tcp, dport: [\"{PORT}\"]}}\n  loss: [1%, 5%, blackhole]\nabort_when: [{{probe: front, failures_in_a_row: 2}}]\nrecovery: 10s\ndeadline_margin: 2s\n",
        s.probes(),
        s.server().ip()
    );
    let (out, path) = s.run("ramp", &yaml, &[]);
    drop(load);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&path);
    assert_eq!(r["verdict"]["result"], "rejected", "{}", r["verdict"]);
    assert_eq!(r["verdict"]["step"], 3, "{}", r["verdict"]);
    let reason = r["verdict"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("probe \"front\" failed 2 times in a row (abort_when[0])"),
        "{reason}"
    );
    let a = &r["abort"];
    assert_eq!(a["step"], 3);
    let (breach, removal, restore) = (
        a["breach_s"].as_f64().unwrap(),
        a["removal_ms"].as_f64().unwrap(),
        a["restore_ms"].as_f64(),
    );
    let interval_ms = r["probes"][0]["interval_s"].as_f64().unwrap() * 1e3;
    eprintln!(
        "MEASURED: breach at {breach:.2} s; every fault removed on both daemons {removal:.1} ms after it (one probe interval: {interval_ms:.0} ms); traffic restored {} after it",
        restore.map(|m| format!("{m:.1} ms")).unwrap_or("-".into())
    );
    assert!(
        restore.is_some(),
        "the probe passed again after the removal"
    );
    assert!(
        r["steps"][2]["end_s"].as_f64().unwrap() < r["steps"][2]["start_s"].as_f64().unwrap() + 8.0
    );
    assert!(s.faults().is_empty(), "{:?}", s.faults());
    assert!(
        answers(&s.lab.pod(1, 1).netns, s.server()),
        "traffic restored"
    );
    let html = std::fs::read_to_string(path.with_extension("html")).unwrap();
    assert!(html.contains("Hypothesis rejected at step 3") && html.contains("class=\"series\""));
    screenshot_shows_the_charts(&path.with_extension("html"), &s.dir.join("ramp.png"));
}

/// Headless Chromium draws the page; the probes' line colour and the steps' shading must be there.
fn screenshot_shows_the_charts(html: &Path, png: &Path) {
    let profile = std::env::temp_dir().join(format!("chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1040,1700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium (Debian package chromium; scripts/bootstrap.sh installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        png.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dec = png::Decoder::new(std::fs::File::open(png).unwrap());
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let px = |rgb: (u8, u8, u8)| {
        buf[..info.buffer_size()]
            .chunks(step)
            .filter(|p| {
                p[0].abs_diff(rgb.0) < 12 && p[1].abs_diff(rgb.1) < 12 && p[2].abs_diff(rgb.2) < 12
            })
            .count()
    };
    let (line, shade, red) = (
        px((0x1f, 0x6f, 0xb2)),
        px((0xfd, 0xe7, 0xc8)),
        px((0xc0, 0x39, 0x2b)),
    );
    eprintln!(
        "screenshot {} ({}x{}): {line} px of the probe's line, {shade} px of step shading, {red} px of red",
        png.display(),
        info.width,
        info.height
    );
    assert!(
        line > 200 && shade > 5000 && red > 200,
        "the charts are not drawn"
    );
}

#[test]
fn a_killed_runner_leaves_nothing_after_the_kernel_deadline() {
    let s = setup("xk", 2, false);
    let file = s.dir.join("kill.yaml");
    std::fs::write(
        &file,
        format!(
            "hypothesis: a dead runner leaves nothing\nsteady_state: [{{name: alive, command: {{run: [\"true\"]}}}}]\nsteps:\n  - duration: 6s\n    faults: [{{name: web, to: [{}], proto: tcp, dport: [\"{PORT}\"], blackhole: true}}]\nabort_when: [{{probe: alive}}]\ndeadline_margin: 2s\n",
            s.server().ip()
        ),
    )
    .unwrap();
    let mut c = Command::new(injector_bin());
    c.args(["experiment", "run", "-f"])
        .arg(&file)
        .arg("--report")
        .arg(s.dir.join("kill"));
    for d in &s.daemons {
        c.arg("--daemon").arg(&d.socket);
    }
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until(
        "the step's fault on both daemons",
        Duration::from_secs(20),
        || {
            anyhow::ensure!(s.faults().len() == 2, "{:?}", s.faults());
            Ok(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    let left: Vec<f64> = s
        .faults()
        .iter()
        .map(|f| f["remaining_s"].as_f64().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "the faults outlive the runner");
    assert!(
        left.iter().all(|&l| l > 0.0 && l <= 8.0),
        "deadline: the step's 6 s + 2 s margin: {left:?}"
    );
    assert!(
        !answers(&s.lab.pod(1, 1).netns, s.server()),
        "blackholed while the runner is dead"
    );
    let deadline = left.iter().cloned().fold(0.0, f64::max);
    until(
        "the faults to end at their deadline",
        Duration::from_secs(30),
        || {
            anyhow::ensure!(s.faults().is_empty(), "{:?}", s.faults());
            Ok(())
        },
    );
    let gone = killed.elapsed().as_secs_f64();
    eprintln!(
        "MEASURED: the runner was killed with {deadline:.2} s left on its faults; both daemons held none {gone:.2} s after the kill"
    );
    assert!(
        gone >= deadline - 0.5,
        "ended before the deadline: {gone} < {deadline}"
    );
    assert!(
        answers(&s.lab.pod(1, 1).netns, s.server()),
        "traffic back after the deadline"
    );
}

#[test]
fn bad_files_are_refused_with_the_field_path_and_a_dry_run_starts_nothing() {
    let s = setup("xb", 1, false);
    let marker = s.dir.join("probe-ran");
    let _ = std::fs::remove_file(&marker);
    let good = format!(
        "hypothesis: x\nsteady_state: [{{name: mark, command: {{run: [touch, {}]}}}}]\nsteps:\n  - {{duration: 2s, faults: [{{name: a, to: [10.42.2.2], loss: 1%}}]}}\n  - {{duration: 2s, faults: [{{name: a, to: [10.42.2.2], loss: 5%}}]}}\n  - {{duration: 2s, faults: [{{name: a, to: [10.42.2.2], loss: 10%}}]}}\n",
        marker.display()
    );
    let cases = [
        (
            "loss: 10%",
            "loss: 150%",
            "steps[2].faults[0].loss: '150%': must be between 0% and 100%",
        ),
        (
            "to: [10.42.2.2], loss: 5%",
            "to: [10.42.2.2/8], loss: 5%",
            "steps[1].faults[0].to: '10.42.2.2/8' has host bits set; did you mean 10.0.0.0/8?",
        ),
        (
            "loss: 1%}",
            "loss: 1%, colour: red}",
            "steps[0].faults[0].colour: unknown field `colour`",
        ),
        (
            "duration: 2s, faults: [{name: a, to: [10.42.2.2], loss: 5%",
            "duration: 2, faults: [{name: a, to: [10.42.2.2], loss: 5%",
            "steps[1].duration: invalid type",
        ),
    ];
    for (from, to, want) in cases {
        let (out, _) = s.run("bad", &good.replacen(from, to, 1), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "want '{want}' in: {err}");
        assert!(!marker.exists(), "a probe ran for a bad file");
        assert!(s.faults().is_empty());
    }
    let (out, path) = s.run("dry", &good, &["--dry-run"]);
    assert!(out.status.success());
    assert_eq!(report(&path)["verdict"]["result"], "dry_run");
    assert!(marker.exists(), "the dry run checked the steady state");
    assert!(s.faults().is_empty(), "the dry run started nothing");
}
