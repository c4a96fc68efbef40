fn main() {
    if let Err(e) = pearl::cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
