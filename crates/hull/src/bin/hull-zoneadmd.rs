//! A zone's supervisor, as a small program of its own (see `hull::zoneadmd_main`).

fn main() {
    hull::zoneadmd_main()
}
