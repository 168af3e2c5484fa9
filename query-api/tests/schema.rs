//! `schema.graphql` at the repository root is the schema the code serves. After changing the schema, run
//! `TRAILBOOK_UPDATE_SCHEMA=1 cargo test -p query-api --test schema` and commit the file.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[test]
fn the_checked_in_schema_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let current = query_api::sdl();
    if std::env::var_os("TRAILBOOK_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "schema.graphql is stale: run `TRAILBOOK_UPDATE_SCHEMA=1 cargo test -p query-api --test schema` and commit it"
    );
}
