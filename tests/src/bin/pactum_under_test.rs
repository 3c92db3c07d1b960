fn main() -> std::process::ExitCode {
    pactum_agent::main()
}
