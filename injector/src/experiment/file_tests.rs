//! Unit tests of the experiment file: a good file read whole, and bad files refused with the path.

use super::*;

const GOOD: &str = r#"
name: web-loss
hypothesis: the front page answers while 1% of its packets are lost
probe_interval: 500ms
steady_state:
  - name: front
    http: {url: "http://10.42.2.2:8080/", status: 200, max_latency: 1s, requests: 5, min_success: 80%}
  - name: drops
    interval: 2s
    prometheus: {url: "http://127.0.0.1:9090", query: "sum(rate(injector_packets_total[10s]))", max: 1e6, if_empty: 0}
  - name: alive
    command: {run: ["true"]}
steps:
  - duration: 10s
    faults:
      - {name: web, to: [10.42.2.2], proto: tcp, dport: ["8080"], loss: 1%}
ramp:
  duration: 5s
  fault: {name: web, to: [10.42.2.2], proto: tcp, dport: ["8080"]}
  loss: [5%, blackhole]
abort_when:
  - {probe: front, failures_in_a_row: 2}
recovery: 10s
deadline_margin: 2s
"#;

#[test]
fn a_good_file_is_read_whole() {
    let e = load("exp.yaml", GOOD).unwrap();
    assert_eq!(e.name, "web-loss");
    assert_eq!(e.probes.len(), 3);
    assert_eq!(e.probes[0].interval, Duration::from_millis(500));
    assert_eq!(e.probes[1].interval, Duration::from_secs(2));
    assert_eq!(
        e.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["loss 1%", "loss 5%", "blackhole"]
    );
    assert_eq!(e.steps[0].faults[0].lifetime(), "12000ms");
    assert_eq!(e.steps[2].faults[0].lifetime(), "7000ms");
    assert_eq!(e.rules.len(), 1);
    assert_eq!(e.rules[0].in_a_row, 2);
    assert_eq!(
        e.rules[0].text,
        "probe \"front\" failed 2 times in a row (abort_when[0])"
    );
    assert_eq!(e.recovery, Duration::from_secs(10));
    assert_eq!(e.fault_names(), ["web"]);
    // JSON reads the same.
    let json = serde_json::to_string(&e.source).unwrap();
    assert_eq!(load("x.json", &json).unwrap().steps.len(), 3);
}

#[test]
fn without_abort_when_every_probe_aborts_after_three_failures() {
    let text = GOOD.replace(
        "abort_when:\n  - {probe: front, failures_in_a_row: 2}\n",
        "",
    );
    let e = load("exp.yaml", &text).unwrap();
    assert_eq!(e.rules.len(), 3);
    assert!(e.rules.iter().all(|r| r.in_a_row == 3));
}

fn bad(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    load("exp.yaml", &GOOD.replacen(from, to, 1))
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_files_are_refused_with_the_field_path() {
    let cases = [
        (
            "loss: 1%}",
            "loss: 150%}",
            "steps[0].faults[0].loss: '150%': must be between 0% and 100%",
        ),
        (
            "to: [10.42.2.2], proto",
            "to: [10.42.2.2/24], proto",
            "steps[0].faults[0].to: '10.42.2.2/24' has host bits set",
        ),
        (
            "loss: 1%}",
            "loss: 1%, colour: red}",
            "steps[0].faults[0].colour: unknown field `colour`",
        ),
        (
            "loss: 1%}",
            "loss: 1%, for: 1m}",
            "steps[0].faults[0].for: set by the experiment",
        ),
        (
            "duration: 10s",
            "duration: ten",
            "steps[0].duration: 'ten' is not a duration",
        ),
        (
            "loss: [5%, blackhole]",
            "loss: [5%, 101%]",
            "ramp.loss[1]: '101%': must be between",
        ),
        (
            "probe: front",
            "probe: back",
            "abort_when[0].probe: 'back' names no probe; the probes are: front, drops, alive",
        ),
        (
            "min_success: 80%",
            "min_success: 80x",
            "steady_state[0].http.min_success: '80x' is not a percentage",
        ),
        (
            "url: \"http://10.42.2.2:8080/\"",
            "url: \"https://x/\"",
            "steady_state[0].http.url: 'https://x/': only http://",
        ),
        (
            "max: 1e6, ",
            "",
            "steady_state[1].prometheus: give min, max or both",
        ),
        (
            "command: {run: [\"true\"]}",
            "command: {run: [\"true\"]}\n    http: {url: \"http://x/\"}",
            "steady_state[2]: give exactly one of",
        ),
        (
            "requests: 5",
            "requets: 5",
            "steady_state[0].http.requets: unknown field `requets`",
        ),
        (
            "name: alive",
            "name: front",
            "steady_state[2].name: 'front' is used by another probe",
        ),
        (
            "recovery: 10s",
            "recovery: 2h",
            "recovery: '2h' must be between 1s and 1h",
        ),
        (
            "hypothesis: the",
            "hypotesis: the",
            "hypotesis: unknown field `hypotesis`",
        ),
        (
            "probe_interval: 500ms",
            "probe_interval: 10ms",
            "probe_interval: '10ms' must be between 100ms and 1h",
        ),
    ];
    for (from, to, want) in cases {
        let e = bad(from, to);
        assert!(e.starts_with(want), "want '{want}...', got '{e}'");
    }
    let e = load(
        "exp.yaml",
        "hypothesis: x\nsteady_state: [{name: a, command: {run: [\"true\"]}}]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("steps: give steps, a ramp, or both"), "{e}");
    let e = load("exp.yaml", "{").unwrap_err().to_string();
    assert!(e.starts_with("(file): not JSON"), "{e}");
}

const K8S: &str = r#"
name: web-k8s
targets: kubernetes
hypothesis: the web pods answer while 1% of the packets to them are lost
probe_interval: 500ms
steady_state:
  - name: front
    pod: shop/client-1
    http: {url: "http://web.shop:8080/", requests: 2}
steps:
  - name: one pod
    duration: 10s
    faults:
      - {name: web, namespace: shop, from: {pods: {matchLabels: {app: client}}},
         to: {pods: {matchLabels: {app: web}}, ports: ["8080"], mode: one}, proto: tcp, loss: 1%}
ramp:
  duration: 5s
  fault: {name: web, to: {pods: {matchLabels: {app: web}}, ports: ["8080"]}, proto: tcp, blackhole: true}
  pods: [one, 50%, all]
recovery: 10s
deadline_margin: 2s
"#;

#[test]
fn kubernetes_targets_take_network_fault_specs_and_ramp_the_blast_radius() {
    use crate::k8s::resource::Mode;
    let e = load("exp.yaml", K8S).unwrap();
    assert_eq!(e.targets, Targets::Kubernetes);
    assert_eq!(e.probes[0].pod.as_deref(), Some("shop/client-1"));
    assert_eq!(
        e.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["one pod", "to pods one", "to pods 50%", "to pods all"]
    );
    let kf = |k: usize| match &e.steps[k].faults[0] {
        StepFault::Kube(f) => f.clone(),
        StepFault::Node(f) => panic!("{f:?}"),
    };
    assert_eq!(kf(0).namespace.as_deref(), Some("shop"));
    assert_eq!(kf(0).spec.duration, "12000ms");
    assert_eq!(e.steps[0].faults[0].lifetime(), "12000ms");
    let to = |k: usize| kf(k).spec.to.unwrap();
    assert_eq!((to(0).mode, to(0).value), (Mode::One, None));
    assert_eq!((to(1).mode, to(1).value), (Mode::One, None));
    assert_eq!((to(2).mode, to(2).value), (Mode::Percent, Some(50)));
    assert_eq!((to(3).mode, to(3).value), (Mode::All, None));
    assert!(kf(3).spec.blackhole && kf(3).namespace.is_none());
    assert_eq!(e.fault_names(), ["web"]);
    // The report's record of a step's faults reads back as the same kind.
    let json = serde_json::to_string(&e.steps[0].faults).unwrap();
    let back: Vec<StepFault> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e.steps[0].faults);
    // A loss ramp over a NetworkFault sets its action, as for node-level faults.
    let text = K8S.replace(
        "blackhole: true}\n  pods: [one, 50%, all]",
        "}\n  loss: [5%, blackhole]",
    );
    let e = load("exp.yaml", &text).unwrap();
    assert_eq!(e.steps[1].name, "loss 5%");
    assert!(matches!(&e.steps[2].faults[0], StepFault::Kube(f) if f.spec.blackhole));
}

#[test]
fn bad_kubernetes_files_are_refused_with_the_field_path() {
    let bad = |from: &str, to: &str| {
        assert!(K8S.contains(from), "{from}");
        load("exp.yaml", &K8S.replacen(from, to, 1))
            .unwrap_err()
            .to_string()
    };
    let cases = [
        (
            "matchLabels: {app: client}",
            "matchLabels: {'app x': client}",
            "steps[0].faults[0].from.pods.matchLabels: 'app x' is not a label key",
        ),
        (
            "mode: one}",
            "mode: percent, value: 101}",
            "steps[0].faults[0].to.value: '101': percent takes 1 to 100",
        ),
        (
            "proto: tcp, loss: 1%}",
            "proto: tcp, loss: 1%, selector: {}}",
            "steps[0].faults[0].selector: unknown field; steps[0].faults[0] takes",
        ),
        (
            "pods: [one, 50%, all]",
            "pods: [one, 0%]",
            "ramp.pods[1]: '0%': a share of the pods from 1% to 100%",
        ),
        (
            "pods: [one, 50%, all]",
            "pods: [one, some]",
            "ramp.pods[1]: 'some': write one, a number of pods",
        ),
        (
            "ports: [\"8080\"]}, proto: tcp, blackhole",
            "ports: [\"8080\"], mode: one}, proto: tcp, blackhole",
            "ramp.fault.to.mode: the ramp sets the blast radius",
        ),
        (
            "pod: shop/client-1",
            "pod: client-1",
            "steady_state[0].pod: 'client-1': write namespace/name",
        ),
        (
            "targets: kubernetes",
            "targets: cluster",
            "targets: unknown variant `cluster`",
        ),
        (
            "proto: tcp, loss: 1%}",
            "proto: tcp, loss: 1%, duration: 1m}",
            "steps[0].faults[0].duration: set by the experiment",
        ),
    ];
    for (from, to, want) in cases {
        let e = bad(from, to);
        assert!(e.starts_with(want), "want '{want}...', got '{e}'");
    }
    // A node-level file cannot ramp pods nor probe from a pod.
    let e = load(
        "exp.yaml",
        "hypothesis: x\nsteady_state: [{name: a, pod: shop/x, command: {run: [\"true\"]}}]\nsteps: [{duration: 1s, faults: [{name: w, to: [10.0.0.1], loss: 1%}]}]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("steady_state[0].pod: a pod is found through the cluster"),
        "{e}"
    );
    let e = load(
        "exp.yaml",
        "hypothesis: x\nsteady_state: [{name: a, command: {run: [\"true\"]}}]\nramp: {duration: 1s, fault: {name: w, to: [10.0.0.1], loss: 1%}, pods: [one]}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("ramp.pods: ramps over pods need Kubernetes targets"),
        "{e}"
    );
}
