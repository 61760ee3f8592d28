//! Writes the federated-averaging AI graph: to the file given as the first argument, or to
//! standard output.

use std::process::ExitCode;

fn main() -> ExitCode {
    let graph = match aiflow_dags::federated_averaging() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: the federated_averaging graph is invalid: {e}");
            return ExitCode::from(1);
        }
    };
    let json = graph.to_json_pretty();
    match std::env::args().nth(1) {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, json) {
                eprintln!("error: cannot write {path}: {e}");
                return ExitCode::from(1);
            }
            eprintln!("wrote {path}");
        }
        None => print!("{json}"),
    }
    ExitCode::SUCCESS
}
