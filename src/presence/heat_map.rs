//! The forecast as a picture: an SVG heat map of the week.

use super::{Forecast, SLOTS};
use crate::escape::xml_escape;
use crate::words::HeatMapWords;

/// How much history the map needs before it means anything.
pub const ENOUGH_HISTORY: i64 = 7 * 86_400;

/// Which way the map is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Weekdays down, half hours across: for a wide screen.
    Wide,
    /// Weekdays across, half hours down, with larger labels: for a phone.
    Tall,
}

/// The forecast as an SVG heat map, green (likely open) to red; `blind`
/// uses blue to orange instead. A legend under it shows the scale from
/// never to always open. With less than [`ENOUGH_HISTORY`] behind it, a
/// note that there is not yet enough history instead.
pub fn heat_map_svg(
    forecast: &Forecast,
    blind: bool,
    layout: Layout,
    words: &HeatMapWords,
) -> String {
    if forecast.history < ENOUGH_HISTORY {
        return not_enough(words);
    }
    match layout {
        Layout::Wide => wide(forecast, blind, words),
        Layout::Tall => tall(forecast, blind, words),
    }
}

/// The note shown instead of a map without a week of history.
fn not_enough(words: &HeatMapWords) -> String {
    const WIDTH: usize = 300;
    let mut svg = open_svg(WIDTH, 56, 14, words.title);
    for (n, line) in words.not_enough.iter().enumerate() {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\">{}</text>",
            WIDTH / 2,
            22 + n * 20,
            xml_escape(line)
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn open_svg(width: usize, height: usize, font: usize, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" font-family=\"sans-serif\" font-size=\"{font}\">\
         <title>{}</title>",
        xml_escape(title)
    )
}

/// A cell of the map, with its weekday, time and value as its tooltip.
fn cell(
    svg: &mut String,
    (x, y, w, h): (usize, usize, usize, usize),
    p: f64,
    blind: bool,
    day: &str,
    slot: usize,
) {
    svg.push_str(&format!(
        "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{}\"><title>{day} {:02}:{:02} {:.0}%</title></rect>",
        colour(p, blind),
        slot / 2,
        (slot % 2) * 30,
        p * 100.0
    ));
}

/// The legend from `x`, `y`: the words at both ends of five steps of the
/// scale, `char_w` the width allowed for a letter.
fn legend(
    svg: &mut String,
    (x, y): (usize, usize),
    char_w: usize,
    blind: bool,
    words: &HeatMapWords,
) {
    const STEP: usize = 14;
    svg.push_str(&format!(
        "<g class=\"legend\"><text x=\"{x}\" y=\"{}\" fill=\"#666\">{}</text>",
        y + 10,
        xml_escape(words.never)
    ));
    let start = x + char_w * words.never.chars().count() + 6;
    for step in 0..5 {
        let p = step as f64 / 4.0;
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{y}\" width=\"{STEP}\" height=\"12\" fill=\"{}\"><title>{:.0}%</title></rect>",
            start + step * (STEP + 1),
            colour(p, blind),
            p * 100.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" fill=\"#666\">{}</text></g>",
        start + 5 * (STEP + 1) + 6,
        y + 10,
        xml_escape(words.always)
    ));
}

/// Rows are weekdays, columns half hours.
fn wide(forecast: &Forecast, blind: bool, words: &HeatMapWords) -> String {
    const CELL_W: usize = 14;
    const CELL_H: usize = 22;
    const LEFT: usize = 40;
    const TOP: usize = 20;
    const LEGEND: usize = 28;
    let width = LEFT + SLOTS * CELL_W + 4;
    let height = TOP + 7 * CELL_H + LEGEND;
    let mut svg = open_svg(width, height, 11, words.title);
    for hour in (0..24).step_by(3) {
        let x = LEFT + hour * 2 * CELL_W;
        svg.push_str(&format!(
            "<text x=\"{x}\" y=\"13\" fill=\"#666\">{hour:02}</text>"
        ));
    }
    for (day, name) in words.days.iter().map(|d| xml_escape(d)).enumerate() {
        let y = TOP + day * CELL_H;
        svg.push_str(&format!(
            "<text x=\"2\" y=\"{}\" fill=\"#666\">{name}</text>",
            y + CELL_H - 7
        ));
        for slot in 0..SLOTS {
            let p = forecast.days[day][slot].clamp(0.0, 1.0);
            let place = (LEFT + slot * CELL_W, y, CELL_W - 1, CELL_H - 1);
            cell(&mut svg, place, p, blind, &name, slot);
        }
    }
    legend(&mut svg, (LEFT, TOP + 7 * CELL_H + 10), 8, blind, words);
    svg.push_str("</svg>");
    svg
}

/// Columns are weekdays, rows half hours; drawn narrow enough that on a
/// phone its 14-unit labels are shown at about that size.
fn tall(forecast: &Forecast, blind: bool, words: &HeatMapWords) -> String {
    const CELL_W: usize = 36;
    const CELL_H: usize = 9;
    const LEFT: usize = 30;
    const TOP: usize = 22;
    const LEGEND: usize = 30;
    let width = LEFT + 7 * CELL_W + 2;
    let height = TOP + SLOTS * CELL_H + LEGEND;
    let mut svg = open_svg(width, height, 14, words.title);
    for (day, name) in words.days.iter().map(|d| xml_escape(d)).enumerate() {
        let x = LEFT + day * CELL_W;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"15\" text-anchor=\"middle\" fill=\"#666\">{name}</text>",
            x + CELL_W / 2
        ));
        for slot in 0..SLOTS {
            let p = forecast.days[day][slot].clamp(0.0, 1.0);
            let place = (x, TOP + slot * CELL_H, CELL_W - 1, CELL_H - 1);
            cell(&mut svg, place, p, blind, &name, slot);
        }
    }
    for hour in (0..24).step_by(3) {
        let y = TOP + hour * 2 * CELL_H;
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\" fill=\"#666\">{hour:02}</text>",
            y + 11
        ));
    }
    legend(&mut svg, (2, TOP + SLOTS * CELL_H + 12), 8, blind, words);
    svg.push_str("</svg>");
    svg
}

/// Red through amber to green, or (colour-blind safe) orange through pale
/// grey to blue.
fn colour(p: f64, blind: bool) -> String {
    let stops: [(f64, f64, f64); 3] = if blind {
        [
            (230.0, 97.0, 0.0),
            (215.0, 215.0, 215.0),
            (10.0, 95.0, 168.0),
        ]
    } else {
        [
            (200.0, 40.0, 30.0),
            (230.0, 170.0, 40.0),
            (30.0, 150.0, 60.0),
        ]
    };
    let (from, to, t) = if p < 0.5 {
        (stops[0], stops[1], p * 2.0)
    } else {
        (stops[1], stops[2], (p - 0.5) * 2.0)
    };
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(from.0, to.0),
        mix(from.1, to.1),
        mix(from.2, to.2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words;
    use crate::words::Lang;

    /// A forecast over `days` of history.
    fn over(days: i64) -> Forecast {
        Forecast {
            history: days * 86_400,
            ..Forecast::default()
        }
    }

    #[test]
    fn heat_map_is_svg_with_a_cell_per_slot() {
        let mut f = over(14);
        f.days[1][28] = 1.0;
        let words = &words::of(Lang::En).heat_map;
        let svg = heat_map_svg(&f, false, Layout::Wide, words);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect").count(),
            7 * SLOTS + 5,
            "cells and legend"
        );
        assert!(svg.contains(">never open</text>") && svg.contains(">always open</text>"));
        assert!(svg.contains("fill=\"#1e963c\""), "green for certain");
        assert!(svg.contains("fill=\"#c8281e\""), "red for never");
        let blind = heat_map_svg(&f, true, Layout::Wide, words);
        let italian = heat_map_svg(&f, false, Layout::Wide, &words::of(Lang::It).heat_map);
        assert!(italian.contains(">Lun</text>") && !italian.contains(">Mon<"));
        assert!(blind.contains("fill=\"#0a5fa8\"") && blind.contains("fill=\"#e66100\""));
        // The same cells, weekdays across.
        let tall = heat_map_svg(&f, false, Layout::Tall, words);
        assert_eq!(tall.matches("<rect").count(), 7 * SLOTS + 5);
        assert!(tall.contains("Tue 14:00 100%") && tall.contains("font-size=\"14\""));
        assert!(tall.contains("viewBox=\"0 0 284 "), "{}", &tall[..200]);
    }

    #[test]
    fn without_a_week_of_history_the_map_says_so() {
        for lang in Lang::ALL {
            let words = &words::of(lang).heat_map;
            for layout in [Layout::Wide, Layout::Tall] {
                for days in [0, 3, 6] {
                    let svg = heat_map_svg(&over(days), false, layout, words);
                    assert!(!svg.contains("<rect"), "{svg}");
                    assert!(svg.contains(&xml_escape(words.not_enough[0])), "{svg}");
                }
                let svg = heat_map_svg(&over(7), false, layout, words);
                assert!(svg.contains("<rect") && !svg.contains(words.not_enough[0]));
            }
        }
    }
}
