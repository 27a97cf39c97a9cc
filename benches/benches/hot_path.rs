//! Criterion micro-benchmarks of the gateway's hot path.

use criterion::{criterion_group, criterion_main, Criterion};

fn key_parse(c: &mut Criterion) {
    let key = wrapx_core::keys::ApiKey::generate();
    let presented = key.expose().to_owned();
    let hasher = wrapx_core::keys::KeyHasher::new(&[7u8; 32]);
    c.bench_function("key_parse_and_hash", |b| {
        b.iter(|| {
            let parsed = wrapx_core::keys::ApiKey::parse(&presented);
            parsed.map(|k| hasher.hash_key(&k))
        })
    });
}

criterion_group!(benches, key_parse);
criterion_main!(benches);
