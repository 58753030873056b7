//! `kubectl-injector`: the kubectl plugin (`kubectl injector ...`, found on PATH by kubectl) for
//! NetworkFaults; all of it is the library's `injector::kubectl`.

fn main() -> std::process::ExitCode {
    injector::kubectl::main()
}
