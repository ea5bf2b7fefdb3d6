//! The `hull` binary: everything is in the library (src/lib.rs).

fn main() {
    hull::main()
}
