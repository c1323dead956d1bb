//! Rebuilds `bitsd` when a file is added to or removed from the folders
//! compiled into it (edits to existing files are tracked by the compiler).

fn main() {
    for folder in ["assets", "wiki", "templates"] {
        println!("cargo:rerun-if-changed={folder}");
    }
}
