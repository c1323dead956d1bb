//! Forecast benchmark, run by `make bench` (or `cargo bench --bench forecast`).
//!
//! Builds a database holding one year of history: a status change every two
//! to five hours and a sample from each of two sensors every minute (about a
//! million temperature rows), then times `presence::compute` over the whole
//! year (a 52-week window) and over the default 8 weeks.

use std::time::{Duration, Instant};

use bitsd::clock::LocalTime;
use bitsd::presence;
use bitsd::record::{ModifiedBy, StatusChange, StatusValue, TemperatureSample};
use bitsd::store::Db;
use chrono::Duration as Span;
use rand::Rng;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("forecast benchmark: run it with `make bench`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("year.db");
    let mut db = Db::open(&path, false).unwrap();
    let now = LocalTime::parse("2026-11-22 12:00:00").unwrap();
    let start = LocalTime(now.0 - Span::weeks(52));
    let mut rng = rand::rng();
    let filling = Instant::now();
    let (mut changes, mut samples) = (0, 0);
    {
        let batch = db.batch().unwrap();
        let mut t = start.0;
        let mut open = false;
        while t < now.0 {
            open = !open;
            batch
                .insert_status(&StatusChange {
                    timestamp: LocalTime(t),
                    value: if open {
                        StatusValue::Open
                    } else {
                        StatusValue::Closed
                    },
                    modified_by: ModifiedBy::Bits,
                    device: None,
                    until: None,
                    person: None,
                })
                .unwrap();
            changes += 1;
            t += Span::minutes(rng.random_range(120..300));
        }
        let mut t = start.0;
        while t < now.0 {
            for sensor in 0..2 {
                batch
                    .insert_temperature(&TemperatureSample {
                        timestamp: LocalTime(t + Span::milliseconds(sensor)),
                        sensor,
                        value: 18.0 + rng.random_range(0.0..6.0),
                        modified_by: ModifiedBy::Bits,
                        device: None,
                    })
                    .unwrap();
                samples += 1;
            }
            t += Span::minutes(1);
        }
        batch.commit().unwrap();
    }
    println!("# Forecast benchmark\n");
    println!(
        "- database: {changes} status changes and {samples} temperature rows over 52 weeks, written in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    for weeks in [52, 8] {
        let mut times: Vec<Duration> = (0..25)
            .map(|_| {
                let started = Instant::now();
                let forecast = presence::compute(&db, now, weeks).unwrap();
                let took = started.elapsed();
                std::hint::black_box(forecast);
                took
            })
            .collect();
        times.sort();
        println!(
            "- window of {weeks} weeks, 25 runs: median {:.2} ms (min {:.2}, max {:.2}), query and computation",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[0].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0
        );
    }
}
