//! The `mailgate` command.
fn main() -> std::process::ExitCode {
    mailgate::cli::main()
}
