//! A NetworkFault built from `fault add` flags, and every refusal naming the flag the user typed
//! (the resource's validation, its `spec.<field>` renamed).

use clap::Parser as _;

use crate::k8s::{
    NetworkFault,
    resource::{LabelSelector, Mode, ServiceRef},
};
use crate::kubectl::{
    args::{Cli, Cmd, FaultCmd},
    fault::{build, flag_of},
};

pub(super) fn add(args: &str) -> Result<NetworkFault, String> {
    let argv = std::iter::once("kubectl-injector")
        .chain(["fault", "add"])
        .map(String::from)
        .chain(shell_split(args));
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let Cmd::Fault {
        cmd: FaultCmd::Add(a),
    } = cli.cmd
    else {
        unreachable!()
    };
    build(&a, "shop")
}

/// Splits at spaces outside single quotes (enough for these tests).
fn shell_split(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (vec![], String::new(), false);
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn a_fault_from_flags() {
    let nf = add("slow --from app=checkout --to svc/payments-db --to-ports 5432 --delay 100ms --jitter 10ms --for 10m --to-mode one --seed 7").unwrap();
    assert_eq!(nf.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(nf.metadata.name.as_deref(), Some("slow"));
    let s = &nf.spec;
    let from = s.from.as_ref().unwrap().pods.as_ref().unwrap();
    assert_eq!(from.labels.match_labels["app"], "checkout");
    let to = s.to.as_ref().unwrap();
    assert_eq!(
        to.service,
        Some(ServiceRef {
            name: "payments-db".into(),
            namespace: None
        })
    );
    assert_eq!(
        (to.mode, to.ports.clone()),
        (Mode::One, vec!["5432".to_string()])
    );
    assert_eq!(
        (s.delay.as_deref(), s.jitter.as_deref()),
        (Some("100ms"), Some("10ms"))
    );
    assert_eq!((s.duration.as_str(), s.seed), ("10m", 7));

    let nf = add(
        "x --from-ns bank --to 10.42.0.0/16 --to-except 10.42.1.1 --loss 5% --proto TCP --dry-run",
    )
    .unwrap();
    let from = nf.spec.from.unwrap().pods.unwrap();
    assert_eq!(
        (from.namespaces, from.labels),
        (vec!["bank".to_string()], LabelSelector::default())
    );
    assert_eq!(
        nf.spec.to.as_ref().unwrap().except,
        vec!["10.42.1.1".to_string()]
    );
    assert_eq!(nf.spec.proto.as_deref(), Some("tcp"));
    assert!(nf.spec.dry_run);
    let nf = add("y --to-ports 53 --proto udp --blackhole").unwrap();
    assert!(nf.spec.to.unwrap().any && nf.spec.from.is_none());
}

#[test]
fn bad_flags_are_named() {
    let e = |args: &str| add(args).unwrap_err();
    assert_eq!(
        e("x --to app=a --loss 150%"),
        "--loss: '150%': must be between 0% and 100%"
    );
    assert_eq!(
        e("x --delay 10ms --jitter 20ms"),
        "--jitter: '20ms' must be between 0s and the delay"
    );
    assert!(
        e("x --to 10.42.2.7/24 --blackhole").starts_with("--to: '10.42.2.7/24' has host bits set")
    );
    assert!(
        e("x --to app=a --to-mode fixed=0 --blackhole")
            .starts_with("--to-mode: '0': fixed takes 1 or more pods")
    );
    assert!(
        e("x --to 10.0.0.0/8 --to-mode one --blackhole")
            .starts_with("--to-mode: 'one' chooses among pods")
    );
    assert!(
        e("x --to app=a --to-ports 99999 --proto tcp --blackhole")
            .starts_with("--to-ports: '99999'")
    );
    assert!(
        e("x --from app=a --from-except 10.0.0.1 --blackhole")
            .starts_with("--from-except: exceptions apply to cidrs")
    );
    assert!(e("x --to-ns 'Bad' --blackhole").starts_with("--to-ns: 'Bad' is not a name"));
    assert!(e("x --from 'app=Bad Value' --blackhole").starts_with("--from: "));
    assert!(e("x --to svc/db --to-ns bank --blackhole").contains("write svc/NAMESPACE/NAME"));
    let two = e("x --blackhole --loss 5%");
    assert!(
        two.contains("one action") && two.contains("two faults"),
        "{two}"
    );
    assert!(e("x --loss 5% --for 2d").starts_with("--for: '2d' is not a duration"));
    assert!(e("x --loss 5% --proto sctp").starts_with("--proto: 'sctp'"));
    assert!(e("Bad_Name --loss 5%").starts_with("NAME: 'Bad_Name' is not a resource name"));
    assert!(e("x --to-ns-selector 'env in (a' --loss 5%").starts_with("--to-ns-selector: "));
}

#[test]
fn fields_map_to_flags() {
    for (field, flag) in [
        ("spec.from.pods.matchExpressions[0].key", "--from"),
        ("spec.to.pods.namespaces[1]", "--to-ns"),
        (
            "spec.to.pods.namespaceSelector.matchLabels",
            "--to-ns-selector",
        ),
        ("spec.to.service.name", "--to"),
        ("spec.to.value", "--to-mode"),
        ("spec.from.ports", "--from-ports"),
        ("spec.to.cidrs", "--to"),
        ("spec.duration", "--for"),
        ("spec.bothWays", "--both-ways"),
        ("spec.dryRun", "--dry-run"),
        ("spec.flows", "--flows"),
        ("spec.rejectWith", "--reject-with"),
        ("spec.lossModel", "--loss-model"),
        ("spec.pulse", "--pulse"),
        ("spec", "--loss/--blackhole/--delay"),
        ("metadata.name", "NAME"),
    ] {
        assert_eq!(flag_of(field), flag, "{field}");
    }
}

#[test]
fn bursty_loss_reorder_pulse_and_loss_with_delay_from_flags() {
    let nf = add("b --to app=db --loss 5% --burst 4 --pulse 10s/30s").unwrap();
    let s = &nf.spec;
    assert_eq!(
        (s.loss.as_deref(), s.burst.as_deref(), s.pulse.as_deref()),
        (Some("5%"), Some("4"), Some("10s/30s"))
    );
    let nf = add("g --to app=db --loss-model ge:1%,25%").unwrap();
    assert_eq!(nf.spec.loss_model.as_deref(), Some("ge:1%,25%"));
    let nf = add("d --to app=db --loss 1% --delay 50ms --reorder 25%").unwrap();
    assert_eq!(
        crate::kubectl::view::action_text(&nf),
        "loss 1% + delay 50ms reorder 25%"
    );
    for (args, want) in [
        (
            "x --to app=db --loss 5% --reorder 25%",
            "--reorder: '25%': sends that share without the delay",
        ),
        (
            "x --to app=db --loss-model ge:1%",
            "--loss-model: 'ge:1%': write ge:p,r",
        ),
        ("x --to app=db --blackhole --pulse 10s", "--pulse: '10s'"),
        (
            "x --to app=db --loss 5% --duplicate 5%",
            "--duplicate: a fault has one action (or loss with delay)",
        ),
    ] {
        let e = add(args).unwrap_err();
        assert!(e.starts_with(want), "{args}: want '{want}' in '{e}'");
    }
}
