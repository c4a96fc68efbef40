fn main() {
    pearl::malloc::tune_for_tensors();
    if let Err(e) = pearl::cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
