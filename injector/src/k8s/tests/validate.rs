//! Validation: what the schema cannot say is refused with `spec.<field>: value and fix`, and the
//! action's messages are `injector fault add`'s own.

use crate::fault::spec::FaultSpec;
use crate::k8s::fixture::fault;

fn refused(spec: &str) -> String {
    fault("shop", "f", spec)
        .spec
        .validate()
        .unwrap_err()
        .to_string()
}

fn check(spec: &str, want: &str) {
    let e = refused(spec);
    assert!(e.starts_with(want), "want '{want}...' got '{e}'");
}

#[test]
fn good_specs_pass() {
    for s in [
        "{to: {pods: {matchLabels: {app: db}}}, loss: 5%}",
        "{from: {pods: {matchExpressions: [{key: tier, operator: In, values: [web]}], namespaces: [a, b]}},
          to: {service: {name: db}, ports: [postgres, '5432']}, delay: 100ms, jitter: 10ms, duration: 1h}",
        "{to: {cidrs: [10.0.0.0/8], except: [10.1.0.0/16]}, proto: tcp, blackhole: true}",
        "{from: {any: true, except: [10.42.1.0/24]}, to: {pods: {}, mode: percent, value: 30}, loss: 1%}",
        "{to: {pods: {namespaceSelector: {matchLabels: {team: x}}}, mode: fixed, value: 2}, blackhole: true}",
        "{to: {pods: {matchLabels: {app: db}}}, proto: tcp, reject: true, rejectWith: tcp-reset}",
        "{to: {pods: {matchLabels: {app: db}}}, duplicate: 5%}",
        "{to: {pods: {matchLabels: {app: db}}}, corrupt: 1%}",
        "{to: {pods: {matchLabels: {app: db}}}, loss: 5%, burst: '4', pulse: 10s/30s}",
        "{to: {pods: {matchLabels: {app: db}}}, lossModel: 'ge:1%,25%'}",
        "{to: {pods: {matchLabels: {app: db}}}, loss: 1%, delay: 50ms, reorder: 25%}",
    ] {
        let nf = fault("shop", "f", s);
        assert_eq!(nf.spec.validate(), Ok(()), "{s}");
    }
}

#[test]
fn what_the_schema_cannot_say_is_refused_naming_the_field() {
    check(
        "{to: {cidrs: [10.0.0.1]}, delay: 10ms, jitter: 20ms}",
        "spec.jitter: '20ms' must be between 0s and the delay",
    );
    check(
        "{to: {cidrs: [10.0.0.1]}, loss: 0%}",
        "spec.loss: '0%': must be more than 0%",
    );
    check("{to: {cidrs: [10.0.0.1]}}", "spec: give one of loss");
    check(
        "{to: {cidrs: [10.0.0.1]}, loss: 5%, duplicate: 10%}",
        "spec.duplicate: a fault has one action (or loss with delay) and loss is given too; for \
         loss and duplicate together use two faults",
    );
    check(
        "{to: {cidrs: [10.0.0.1]}, loss: 5%, burst: '0.5'}",
        "spec.burst: '0.5': the mean burst length is a number of packets, at least 1",
    );
    check(
        "{to: {cidrs: [10.0.0.1]}, lossModel: 'ge:1%'}",
        "spec.lossModel: 'ge:1%': write ge:p,r[,h[,k]]",
    );
    check(
        "{to: {cidrs: [10.0.0.1]}, loss: 5%, reorder: 25%}",
        "spec.reorder: '25%': sends that share without the delay, so it needs one",
    );
    check(
        "{to: {cidrs: [10.0.0.1]}, blackhole: true, pulse: 30s/10s}",
        "spec.pulse: '30s/10s': the on-time must be shorter than the period",
    );
    check(
        "{to: {cidrs: [10.0.0.1]}, proto: udp, reject: true, rejectWith: tcp-reset}",
        "spec.rejectWith: tcp-reset answers only TCP",
    );
    check(
        "{to: {cidrs: [10.0.0.1]}, duplicate: 0%}",
        "spec.duplicate: '0%': must be more than 0%",
    );
    check(
        "{to: {cidrs: [10.0.0.1]}, blackhole: true, duration: 25h}",
        "spec.duration: '25h' must be between 1ms and 24h",
    );
    check(
        "{to: {}, blackhole: true}",
        "spec.to: none given: give exactly one of pods, service, cidrs or any: true",
    );
    check(
        "{from: {any: true, cidrs: [10.0.0.1]}, blackhole: true}",
        "spec.from: cidrs and any given",
    );
    check(
        "{to: {cidrs: []}, blackhole: true}",
        "spec.to.cidrs: empty list",
    );
    check(
        "{to: {cidrs: [10.0.0.1/24]}, blackhole: true}",
        "spec.to.cidrs: '10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?",
    );
    check(
        "{from: {cidrs: [fd00::1]}, to: {cidrs: [10.0.0.1]}, blackhole: true}",
        "spec.to.cidrs: from and to share no address family",
    );
    check(
        "{to: {cidrs: [10.0.0.0/24], except: [10.0.1.0/24]}, blackhole: true}",
        "spec.to.except: '10.0.1.0/24' lies outside every CIDR of to",
    );
    check(
        "{to: {pods: {}, ports: ['80']}, blackhole: true}",
        "spec.proto: port ranges need proto tcp or udp",
    );
    check(
        "{to: {pods: {}, ports: [http]}, proto: tcp, blackhole: true}",
        "spec.to.ports: 'http' is a port name",
    );
    check(
        "{from: {pods: {}, ports: ['70000']}, proto: tcp, blackhole: true}",
        "spec.from.ports: '70000': ports are 0-65535",
    );
    check(
        "{to: {service: {name: db}, ports: ['1-2']}, blackhole: true}",
        "spec.to.ports: '1-2': a Service's ports are given one by one",
    );
    check(
        "{to: {pods: {}, except: [10.0.0.1]}, blackhole: true}",
        "spec.to.except: exceptions apply to cidrs or any",
    );
    check(
        "{to: {cidrs: [10.0.0.1], mode: one}, blackhole: true}",
        "spec.to.mode: 'one' chooses among pods",
    );
    check(
        "{to: {pods: {}, mode: fixed}, blackhole: true}",
        "spec.to.value: mode fixed needs a value",
    );
    check(
        "{to: {pods: {}, mode: percent, value: 150}, blackhole: true}",
        "spec.to.value: '150': percent takes 1 to 100",
    );
    check(
        "{to: {pods: {}, value: 3}, blackhole: true}",
        "spec.to.value: '3': only modes fixed and percent take a value",
    );
    check(
        "{to: {pods: {namespaces: [a], namespaceSelector: {}}}, blackhole: true}",
        "spec.to.pods.namespaces: give namespaces or namespaceSelector, not both",
    );
    check(
        "{to: {pods: {namespaces: [Bad_NS]}}, blackhole: true}",
        "spec.to.pods.namespaces[0]: 'Bad_NS' is not a name",
    );
    check(
        "{to: {pods: {matchLabels: {'a b': x}}}, blackhole: true}",
        "spec.to.pods.matchLabels: 'a b' is not a label key",
    );
    check(
        "{to: {pods: {matchExpressions: [{key: app, operator: In}]}}, blackhole: true}",
        "spec.to.pods.matchExpressions[0].values: In needs at least one value",
    );
    check(
        "{to: {pods: {namespaceSelector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}}}, blackhole: true}",
        "spec.to.pods.namespaceSelector.matchExpressions[0].values: Exists takes no values",
    );
}

#[test]
fn action_messages_are_the_cli_s_own() {
    // The same values through `injector fault add`'s validation give the same message.
    for (nf, cli) in [
        (
            "{to: {any: true}, delay: 10ms, jitter: 20ms}",
            FaultSpec {
                delay: Some("10ms".into()),
                jitter: Some("20ms".into()),
                ..Default::default()
            },
        ),
        (
            "{to: {any: true}, loss: 0%}",
            FaultSpec {
                loss: Some("0%".into()),
                ..Default::default()
            },
        ),
        (
            "{to: {any: true}, blackhole: true, flows: 0.00001%}",
            FaultSpec {
                blackhole: true,
                flows: Some("0.00001%".into()),
                ..Default::default()
            },
        ),
    ] {
        let cli = FaultSpec {
            name: "x".into(),
            lifetime: "5m".into(),
            ..cli
        };
        let want = cli.validate("").unwrap_err().msg;
        let got = fault("shop", "f", nf).spec.validate().unwrap_err().msg;
        assert_eq!(got, want);
    }
}
