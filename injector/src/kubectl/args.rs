//! The command line of `kubectl injector`: its subcommands and flags (kubectl's own connection
//! flags: --kubeconfig, --context, -n), parsed by clap; no API calls here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  kubectl injector fault add slow-db -n shop --from app=checkout --to svc/payments-db \\
      --delay 100ms --jitter 10ms --for 5m
  kubectl injector fault add lossy -n shop --from 'app=cart,tier in (web,api),!canary' \\
      --to 10.42.2.0/24 --loss 5% --to-mode percent=50 --both-ways
  kubectl injector fault add cut -n shop --to app=payments --to-mode one --blackhole --print
  kubectl injector ls -A -o wide           # one row per fault and node, with counters
  kubectl injector get slow-db -n shop     # spec, status, conditions, counters per node
  kubectl injector apply -f faults.yaml    # NetworkFaults, several documents, all or nothing
  kubectl injector rm slow-db -n shop      # or --all
  kubectl injector abort --reason 'checkout down'   # every fault ends on every node";

/// `kubectl injector`: NetworkFaults in the current kubeconfig context.
#[derive(Parser)]
#[command(
    name = "kubectl-injector",
    bin_name = "kubectl injector",
    version,
    about = "Network faults between Kubernetes pods and Services (NetworkFault resources of injector)",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Where the API server is: kubectl's flags, with kubectl's defaults.
#[derive(Args, Clone, Debug, Default)]
pub struct ConnArgs {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, help_heading = "Cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, global = true, help_heading = "Cluster")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else default).
    #[arg(short = 'n', long, global = true, help_heading = "Cluster")]
    pub namespace: Option<String>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Faults one by one: `fault add` builds a NetworkFault from flags.
    Fault {
        #[command(subcommand)]
        cmd: FaultCmd,
    },
    /// List NetworkFaults with phase, action, time left and counters from every node.
    Ls(LsArgs),
    /// One NetworkFault: spec, status, conditions and counters per node.
    Get(GetArgs),
    /// Delete NetworkFaults by name, or --all in the namespace.
    Rm(RmArgs),
    /// Create or update NetworkFaults from YAML or JSON (`-f -`: stdin), all or nothing.
    Apply(ApplyArgs),
    /// End every NetworkFault that exists now, on every node (faults created later run).
    Abort(AbortArgs),
    /// Print the CRDs (NetworkFault, InjectorControl, InjectorNode) as YAML.
    Crd,
}

#[derive(Subcommand)]
pub enum FaultCmd {
    /// Create a NetworkFault from flags.
    #[command(after_help = EXAMPLES)]
    Add(Box<AddArgs>),
    /// Same as `kubectl injector ls`.
    Ls(LsArgs),
    /// Same as `kubectl injector get`.
    Get(GetArgs),
    /// Same as `kubectl injector rm`.
    Rm(RmArgs),
}

/// `-o`: how read commands print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    /// A row per fault and node, with the match.
    Wide,
    Json,
    Yaml,
}

#[derive(Args, Clone, Debug)]
pub struct LsArgs {
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args, Clone, Debug)]
pub struct GetArgs {
    pub name: String,
    /// Output format (wide is table here).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args, Clone, Debug)]
pub struct RmArgs {
    pub names: Vec<String>,
    /// Every NetworkFault of the namespace.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
}

#[derive(Args, Clone, Debug)]
pub struct ApplyArgs {
    /// A YAML or JSON file of NetworkFaults (`---` between documents, or a List); `-`: stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: String,
    /// Take over fields another manager owns (server-side apply's force).
    #[arg(long)]
    pub force_conflicts: bool,
}

#[derive(Args, Clone, Debug)]
pub struct AbortArgs {
    /// Why, for the people reading it later (kept in InjectorControl `cluster`).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `fault add NAME`: the flags of a NetworkFault. A side (`--from`, `--to`) is a label selector
/// (`app=checkout,tier in (a,b),!canary`), `svc/NAME` or `svc/NAMESPACE/NAME`, CIDRs, or `any`.
#[derive(Args, Clone, Debug, Default)]
pub struct AddArgs {
    /// The NetworkFault's name (a-z, 0-9, '-', '.').
    pub name: String,
    /// Where packets come from: pods by label selector (app=checkout,tier in (a,b),!canary),
    /// svc/NAME or svc/NS/NAME, CIDRs (10.42.1.0/24,fd00::/64) or any (default).
    #[arg(long)]
    pub from: Option<String>,
    /// Where they go: as --from.
    #[arg(long)]
    pub to: Option<String>,
    /// Namespaces of --from's pods, by name (default: the fault's namespace).
    #[arg(long, value_delimiter = ',')]
    pub from_ns: Vec<String>,
    /// Namespaces of --to's pods, by name.
    #[arg(long, value_delimiter = ',')]
    pub to_ns: Vec<String>,
    /// Namespaces of --from's pods, by their labels (a selector; '' for every namespace).
    #[arg(long)]
    pub from_ns_selector: Option<String>,
    /// Namespaces of --to's pods, by their labels.
    #[arg(long)]
    pub to_ns_selector: Option<String>,
    /// Source ports or ranges: 53, 8000-8080 (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub from_ports: Vec<String>,
    /// Destination ports or ranges; for a Service also its port names or numbers.
    #[arg(long, value_delimiter = ',')]
    pub to_ports: Vec<String>,
    /// CIDRs inside --from (CIDRs or any) the fault leaves alone.
    #[arg(long, value_delimiter = ',')]
    pub from_except: Vec<String>,
    /// CIDRs inside --to the fault leaves alone.
    #[arg(long, value_delimiter = ',')]
    pub to_except: Vec<String>,
    /// Blast radius over --from's pods: all, one, fixed=N, percent=P.
    #[arg(long)]
    pub from_mode: Option<String>,
    /// Blast radius over --to's pods (or a Service's endpoints): all, one, fixed=N, percent=P.
    #[arg(long)]
    pub to_mode: Option<String>,
    /// tcp, udp, icmp or any (default: a Service's protocols, else any).
    #[arg(long)]
    pub proto: Option<String>,
    /// Also the reverse direction (to -> from, ports swapped).
    #[arg(long)]
    pub both_ways: bool,
    /// Drop this share of packets: 5%, 0.01%. With --delay: lost first, the rest delayed.
    #[arg(long)]
    pub loss: Option<String>,
    /// Losses in bursts of this mean length (packets, >= 1), Gilbert-Elliott: 4.
    #[arg(long)]
    pub burst: Option<String>,
    /// Instead of --loss: ge:p,r[,h[,k]] in percent (netem's gemodel): ge:1%,25%.
    #[arg(long)]
    pub loss_model: Option<String>,
    /// Drop every packet, silently.
    #[arg(long)]
    pub blackhole: bool,
    /// Fail fast: a TCP reset or an ICMP unreachable back to the sender.
    #[arg(long)]
    pub reject: bool,
    /// With --reject: tcp-reset, icmp-port, icmp-host or icmp-admin (default by protocol).
    #[arg(long)]
    pub reject_with: Option<String>,
    /// Send this share of packets twice: 5%.
    #[arg(long)]
    pub duplicate: Option<String>,
    /// Flip one payload bit of this share of packets (checksum left): 1%.
    #[arg(long)]
    pub corrupt: Option<String>,
    /// Let the matched traffic through at this rate, in aggregate: 10mbit (tc's units).
    #[arg(long)]
    pub rate: Option<String>,
    /// With --rate: the bucket, bytes that may leave at once after a pause: 32kb.
    #[arg(long, requires = "rate")]
    pub rate_burst: Option<String>,
    /// Answer DNS questions for --dns-name with nxdomain, servfail, refused, drop or delay
    /// (with --delay): answers from UDP port 53 to the pods in --to.
    #[arg(long)]
    pub dns: Option<String>,
    /// With --dns: the names it answers for: db.prod.svc.cluster.local, or .svc.cluster.local
    /// for every name under it (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', requires = "dns")]
    pub dns_name: Vec<String>,
    /// Hold packets this long: 100ms (at most 10s).
    #[arg(long)]
    pub delay: Option<String>,
    /// Uniform +- jitter around the delay, at most the delay: 10ms.
    #[arg(long)]
    pub jitter: Option<String>,
    /// Send this share of a delay's packets without the delay, so later ones overtake: 25%.
    #[arg(long)]
    pub reorder: Option<String>,
    /// Act only ON of every PERIOD from the fault's start: 10s/30s.
    #[arg(long)]
    pub pulse: Option<String>,
    /// Hit only this share of flows (connections), chosen by a seeded hash: 20%.
    #[arg(long)]
    pub flows: Option<String>,
    /// Seed of the flow choice and of the modes' pod choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Lifetime from creation, one deadline on every node: 30s, 5m, 1h (at most 24h).
    #[arg(long = "for", default_value = "5m")]
    pub lifetime: String,
    /// Shadow mode: count what the fault would hit, touch nothing (spec.dryRun). To see the
    /// object without creating it, use --print.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the NetworkFault (YAML, or -o json) and create nothing.
    #[arg(long)]
    pub print: bool,
    /// Print the created object as yaml or json instead of one line.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Output>,
}
