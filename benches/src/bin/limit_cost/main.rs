//! `wrapx-limit-cost`: the Redis cost of one rate-limit check, the sorted-set script of before
//! issue 15 beside the counter script the gateway runs now, at the state a busy key holds
//! (2,000 requests/s over a 60 s window). Reports Redis's own time per `EVALSHA` (`INFO
//! commandstats`, reset with `CONFIG RESETSTAT` before each run) and the memory of the key.
//!
//! By default it starts a private `redis-server` so that no other client's scripts mix into
//! the statistics; `--redis-url` measures an existing one instead (its statistics are reset).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;

/// The baseline: the script as it was, a sorted set with one member per admitted request.
const OLD_SCRIPT: &str = include_str!("old_window.lua");
/// The script the gateway ships, read from its source.
const NEW_SCRIPT: &str = include_str!("../../../../gateway/src/limits/window.lua");

/// The gateway's sub-windows per window (`limits::window::SUB_WINDOWS`).
const SUB_WINDOWS: u64 = 20;

#[derive(Parser)]
#[command(name = "wrapx-limit-cost")]
struct Cli {
    /// Measure this Redis instead of a private one (its statistics are reset).
    #[arg(long)]
    redis_url: Option<String>,
    /// Checks per measurement.
    #[arg(long, default_value_t = 20_000)]
    calls: u64,
    /// The traffic the key's state reflects, in requests per second over the window.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// The window, in seconds.
    #[arg(long, default_value_t = 60)]
    window_s: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    SortedSet,
    Counters,
}

struct Measured {
    usec_per_call: f64,
    round_trip: Duration,
    memory: u64,
    state: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (_server, url) = match &cli.redis_url {
        Some(url) => (None, url.clone()),
        None => {
            let (server, url) = PrivateRedis::start()?;
            (Some(server), url)
        }
    };
    let mut conn = redis::Client::open(url.as_str())?
        .get_connection()
        .context("connecting to Redis")?;
    let version = redis::cmd("INFO")
        .arg("server")
        .query::<String>(&mut conn)?
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_owned))
        .unwrap_or_default();
    println!(
        "Redis {version}; a key at {} requests/s over {} s ({} requests in the window); {} checks each",
        cli.rate,
        cli.window_s,
        cli.rate * cli.window_s,
        cli.calls
    );
    println!(
        "{:<34} {:>14} {:>14} {:>12}  state",
        "script, slots per check", "Redis µs/call", "round trip µs", "key bytes"
    );
    for slots in [1, 64] {
        for variant in [Variant::SortedSet, Variant::Counters] {
            let m = measure(&mut conn, &cli, variant, slots)?;
            let name = match variant {
                Variant::SortedSet => "before: sorted set",
                Variant::Counters => "after: counters",
            };
            println!(
                "{:<34} {:>14.2} {:>14.1} {:>12}  {}",
                format!("{name}, {slots}"),
                m.usec_per_call,
                m.round_trip.as_secs_f64() * 1e6,
                m.memory,
                m.state
            );
        }
    }
    Ok(())
}

/// Fills the key as `rate` requests/s over the window leave it, then runs `calls` admitted
/// checks of `slots` each.
fn measure(
    conn: &mut redis::Connection,
    cli: &Cli,
    variant: Variant,
    slots: u64,
) -> anyhow::Result<Measured> {
    let key = "wrapx-bench:limit-cost";
    let window_us = cli.window_s * 1_000_000;
    let in_window = cli.rate * cli.window_s;
    // Room for the state (the counters' oldest sub-window counts whole: up to a twentieth
    // more) and every check: each one is admitted, as most are on a busy key.
    let limit = 2 * in_window + cli.calls * slots;
    let width = (window_us / SUB_WINDOWS).max(1);
    redis::cmd("DEL").arg(key).query::<()>(conn)?;
    let now = redis_now(conn)?;
    match variant {
        Variant::SortedSet => {
            let gap = window_us / in_window.max(1);
            for chunk in (0..in_window).collect::<Vec<_>>().chunks(10_000) {
                let mut zadd = redis::cmd("ZADD");
                zadd.arg(key);
                for i in chunk {
                    zadd.arg(now - i * gap).arg(format!("seed{i}:1"));
                }
                zadd.query::<()>(conn)?;
            }
        }
        Variant::Counters => {
            // What the script leaves after that traffic: each sub-window that has an admission
            // in the window holds `rate × width` slots and the time of its last one; then the
            // total, the oldest index, the newest admission and the width.
            let per = cli.rate * width / 1_000_000;
            let current = now / width;
            let oldest = current - window_us.div_ceil(width);
            let mut hset = redis::cmd("HSET");
            hset.arg(key);
            for index in oldest..=current {
                let last = ((index + 1) * width - 1).min(now);
                hset.arg(index).arg(per);
                hset.arg(format!("{index}:t")).arg(last);
            }
            hset.arg("n").arg(per * (current - oldest + 1));
            hset.arg("o")
                .arg(oldest)
                .arg("t")
                .arg(now)
                .arg("w")
                .arg(width);
            hset.query::<()>(conn)?;
        }
    }
    redis::cmd("PEXPIRE")
        .arg(key)
        .arg(cli.window_s * 1000)
        .query::<()>(conn)?;
    let memory: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query(conn)?;
    let state = match variant {
        Variant::SortedSet => format!(
            "{} members",
            redis::cmd("ZCARD").arg(key).query::<u64>(conn)?
        ),
        Variant::Counters => format!("{} fields", redis::cmd("HLEN").arg(key).query::<u64>(conn)?),
    };

    let script = redis::Script::new(match variant {
        Variant::SortedSet => OLD_SCRIPT,
        Variant::Counters => NEW_SCRIPT,
    });
    // Loaded before the statistics are reset: every measured call is an `EVALSHA`.
    script.prepare_invoke().load(conn)?;
    redis::cmd("CONFIG").arg("RESETSTAT").query::<()>(conn)?;
    let started = Instant::now();
    for i in 0..cli.calls {
        let mut invocation = script.key(key);
        invocation.arg(limit).arg(window_us);
        match variant {
            Variant::SortedSet => invocation.arg(format!("c{i}")).arg(slots),
            Variant::Counters => invocation.arg(slots).arg(width),
        };
        let (allowed, ..): (i64, i64, i64, i64, i64) = invocation.invoke(conn)?;
        anyhow::ensure!(
            allowed == 1,
            "check {i} refused: the limit is set to admit all"
        );
    }
    let round_trip = started.elapsed() / u32::try_from(cli.calls.max(1))?;
    let stats: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
    let usec_per_call = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")))
        .context("no cmdstat_evalsha in INFO commandstats")?
        .trim()
        .parse()?;
    redis::cmd("DEL").arg(key).query::<()>(conn)?;
    Ok(Measured {
        usec_per_call,
        round_trip,
        memory,
        state,
    })
}

fn redis_now(conn: &mut redis::Connection) -> anyhow::Result<u64> {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(conn)?;
    Ok(s * 1_000_000 + us)
}

/// A `redis-server` of our own on a free port, stopped on drop.
struct PrivateRedis(Child);

impl PrivateRedis {
    fn start() -> anyhow::Result<(Self, String)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        let server = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((server, format!("redis://127.0.0.1:{port}/0")))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
