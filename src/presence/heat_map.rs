//! The forecast as a picture: an SVG heat map of the week.

use super::{Forecast, SLOTS};
use crate::escape::xml_escape;
use crate::words::HeatMapWords;

/// The forecast as an SVG heat map: rows are weekdays, columns half hours,
/// green (likely open) to red; `blind` uses blue to orange instead. A
/// legend under it shows the scale from never to always open.
pub fn heat_map_svg(forecast: &Forecast, blind: bool, words: &HeatMapWords) -> String {
    const CELL_W: usize = 14;
    const CELL_H: usize = 22;
    const LEFT: usize = 40;
    const TOP: usize = 20;
    const LEGEND: usize = 28;
    let width = LEFT + SLOTS * CELL_W + 4;
    let height = TOP + 7 * CELL_H + LEGEND;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" font-family=\"sans-serif\" font-size=\"11\">\
         <title>{}</title>",
        xml_escape(words.title)
    );
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
            let x = LEFT + slot * CELL_W;
            svg.push_str(&format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{} {:02}:{:02} {:.0}%</title></rect>",
                CELL_W - 1,
                CELL_H - 1,
                colour(p, blind),
                name,
                slot / 2,
                (slot % 2) * 30,
                p * 100.0
            ));
        }
    }
    // The legend: the words at both ends of five steps of the scale.
    let y = TOP + 7 * CELL_H + 10;
    svg.push_str(&format!(
        "<g class=\"legend\"><text x=\"{LEFT}\" y=\"{}\" fill=\"#666\">{}</text>",
        y + 10,
        xml_escape(words.never)
    ));
    let start = LEFT + 8 * words.never.chars().count() + 6;
    for step in 0..5 {
        let p = step as f64 / 4.0;
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{y}\" width=\"{CELL_W}\" height=\"12\" fill=\"{}\"><title>{:.0}%</title></rect>",
            start + step * (CELL_W + 1),
            colour(p, blind),
            p * 100.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" fill=\"#666\">{}</text></g>",
        start + 5 * (CELL_W + 1) + 6,
        y + 10,
        xml_escape(words.always)
    ));
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

    #[test]
    fn heat_map_is_svg_with_a_cell_per_slot() {
        let mut f = Forecast::default();
        f.days[1][28] = 1.0;
        let words = &words::of(Lang::En).heat_map;
        let svg = heat_map_svg(&f, false, words);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect").count(),
            7 * SLOTS + 5,
            "cells and legend"
        );
        assert!(svg.contains(">never open</text>") && svg.contains(">always open</text>"));
        assert!(svg.contains("fill=\"#1e963c\""), "green for certain");
        assert!(svg.contains("fill=\"#c8281e\""), "red for never");
        let blind = heat_map_svg(&f, true, words);
        let italian = heat_map_svg(&f, false, &words::of(Lang::It).heat_map);
        assert!(italian.contains(">Lun</text>") && !italian.contains(">Mon<"));
        assert!(blind.contains("fill=\"#0a5fa8\"") && blind.contains("fill=\"#e66100\""));
    }
}
