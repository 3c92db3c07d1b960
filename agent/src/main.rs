/// mimalloc rather than the system allocator: a negotiation allocates and frees many small
/// JSON values, and glibc's allocator spent about a tenth of the CPU time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pactum_agent::main()
}
