//! The forecast as served: its JSON and heat maps made once, and kept until
//! the status changed or the hour is up.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Duration;
use tokio::time::Instant;

use crate::presence::{Forecast, Layout, heat_map_svg};
use crate::store::StoreError;
use crate::words;
use crate::words::Lang;

/// The forecast as served, with its JSON and pictures made once.
pub struct Rendered {
    pub forecast: Forecast,
    pub json: Bytes,
    /// The heat maps in each language: wide then tall, each in the
    /// standard and the colour-blind palette.
    svgs: Vec<(Lang, [Bytes; 4])>,
    /// The status version it was computed at.
    pub status_version: u64,
    pub computed: Instant,
    /// When it was computed, on the wall clock, to the second.
    pub made: chrono::DateTime<chrono::Utc>,
}

impl Rendered {
    pub fn new(forecast: Forecast, status_version: u64) -> Rendered {
        let days: Vec<&[f64]> = forecast.days.iter().map(|d| d.as_slice()).collect();
        let json = serde_json::json!({ "forecast": days }).to_string();
        let svgs = Lang::ALL
            .into_iter()
            .map(|lang| {
                let words = &words::of(lang).heat_map;
                let map =
                    |blind, layout| Bytes::from(heat_map_svg(&forecast, blind, layout, words));
                let maps = [
                    map(false, Layout::Wide),
                    map(true, Layout::Wide),
                    map(false, Layout::Tall),
                    map(true, Layout::Tall),
                ];
                (lang, maps)
            })
            .collect();
        Rendered {
            json: Bytes::from(json),
            svgs,
            forecast,
            status_version,
            computed: Instant::now(),
            made: chrono::DurationRound::duration_trunc(chrono::Utc::now(), Duration::seconds(1))
                .unwrap_or_else(|_| chrono::Utc::now()),
        }
    }
}

impl Rendered {
    /// The heat map in `lang` drawn as `layout`, in the colour-blind
    /// palette with `blind`.
    pub fn svg(&self, lang: Lang, blind: bool, layout: Layout) -> &Bytes {
        let (_, maps) = self
            .svgs
            .iter()
            .find(|(l, _)| *l == lang)
            .unwrap_or(&self.svgs[0]);
        &maps[usize::from(blind) + 2 * usize::from(layout == Layout::Tall)]
    }
}

/// The least time between two forecasts after the status changed.
const RECOMPUTE_AFTER_CHANGE: std::time::Duration = std::time::Duration::from_secs(60);
/// The age at which a forecast is recomputed anyway, as the window slides.
const RECOMPUTE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// The last forecast, recomputed when the status changed (at most once a
/// minute) or when it is an hour old, on Tokio's clock.
#[derive(Default)]
pub struct ForecastCache {
    current: tokio::sync::Mutex<Option<Arc<Rendered>>>,
}

impl ForecastCache {
    /// The cached forecast, after recomputing it with `compute` if due.
    pub async fn get<F, Fut>(
        &self,
        status_version: u64,
        compute: F,
    ) -> Result<Arc<Rendered>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Forecast, StoreError>>,
    {
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref() {
            let age = cached.computed.elapsed();
            let changed = cached.status_version != status_version;
            let due = (changed && age >= RECOMPUTE_AFTER_CHANGE) || age >= RECOMPUTE_AFTER;
            if !due {
                return Ok(cached.clone());
            }
        }
        let rendered = Arc::new(Rendered::new(compute().await?, status_version));
        *current = Some(rendered.clone());
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forecast cache on a paused clock, counting its computations.
    struct CacheHarness {
        cache: ForecastCache,
        computed: std::sync::atomic::AtomicU32,
        started: tokio::time::Instant,
    }

    impl CacheHarness {
        fn new() -> CacheHarness {
            CacheHarness {
                cache: ForecastCache::default(),
                computed: Default::default(),
                started: tokio::time::Instant::now(),
            }
        }

        /// Asks for the forecast at `second` with the status at
        /// `status_version`; which computation it comes from.
        async fn get(&self, second: u64, status_version: u64) -> u32 {
            tokio::time::sleep_until(self.started + std::time::Duration::from_secs(second)).await;
            let rendered = self
                .cache
                .get(status_version, || async {
                    let n = 1 + self
                        .computed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut f = Forecast::default();
                    f.days[0][0] = f64::from(n);
                    Ok(f)
                })
                .await
                .unwrap();
            rendered.forecast.days[0][0] as u32
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_forecast_is_recomputed_a_minute_after_a_change() {
        let h = CacheHarness::new();
        assert_eq!(h.get(0, 1).await, 1);
        assert_eq!(h.get(30, 1).await, 1, "nothing changed");
        assert_eq!(h.get(59, 2).await, 1, "changed, but less than a minute ago");
        assert_eq!(h.get(60, 2).await, 2, "changed a minute ago");
        assert_eq!(h.get(61, 3).await, 2, "changed again at once");
        assert_eq!(h.get(120, 3).await, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_forecast_is_recomputed_when_an_hour_old() {
        let h = CacheHarness::new();
        assert_eq!(h.get(0, 1).await, 1);
        assert_eq!(h.get(3599, 1).await, 1);
        assert_eq!(h.get(3600, 1).await, 2, "an hour old, unchanged");
        assert_eq!(h.get(7199, 1).await, 2);
        assert_eq!(h.get(7200, 1).await, 3);
    }
}
