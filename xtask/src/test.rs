pub fn run(_u: bool) -> anyhow::Result<()> {
    todo!()
}
