//! A small SVG line-plot writer: log-scale x (session count), linear y
//! (milliseconds), one polyline with point markers per series. Pure code.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// (x, y) points; x must be > 0 (log scale).
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for the y axis: 1, 2 or 5 times a power of ten.
pub fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * base >= v * (1.0 - 1e-12) {
            return m * base;
        }
    }
    10.0 * base
}

/// Renders the plot. The x axis spans the decades around all x values.
pub fn plot(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x_min = xs.clone().fold(f64::INFINITY, f64::min).max(1.0);
    let x_max = xs.fold(0.0, f64::max).max(x_min * 10.0);
    let lo = x_min.log10().floor();
    let hi = x_max.log10().ceil();
    let y_max = nice_ceiling(ys.fold(0.0, f64::max));
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x.log10() - lo) / (hi - lo) * pw;
    let py = |y: f64| TOP + ph - (y / y_max) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Axes, decade ticks on x, five ticks on y.
    let _ = writeln!(
        s,
        r#"<path d="M{LEFT} {TOP} V{} H{}" stroke="black" fill="none"/>"#,
        TOP + ph,
        LEFT + pw
    );
    let mut d = lo;
    while d <= hi + 1e-9 {
        let x = px(10f64.powf(d));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            10f64.powf(d).round()
        );
        d += 1.0;
    }
    for i in 0..=5 {
        let v = y_max * i as f64 / 5.0;
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 20.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = ser.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                path.join(" "),
                ser.color
            );
        }
        for &(x, y) in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"><title>{} N={} {} ms</title></circle>"#,
                px(x),
                py(y),
                ser.color,
                esc(&ser.name),
                x,
                trim(y)
            );
        }
        let ly = TOP + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 12.0,
            ly - 10.0,
            ser.color,
            LEFT + 30.0,
            ly,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_series() -> Vec<Series> {
        vec![
            Series {
                name: "peerline".into(),
                color: "#1f77b4",
                points: vec![(50.0, 0.5), (1000.0, 2.0), (10000.0, 18.0)],
            },
            Series {
                name: "mosquitto <2.0>".into(),
                color: "#d62728",
                points: vec![(10000.0, 40.0), (50.0, 1.0)],
            },
        ]
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(18.0), 20.0);
        assert_eq!(nice_ceiling(40.0), 50.0);
        assert_eq!(nice_ceiling(50.0), 50.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    #[test]
    fn plot_is_well_formed_and_places_points() {
        let svg = plot("t", "N", "ms", &two_series());
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        // Names are escaped.
        assert!(svg.contains("mosquitto &lt;2.0&gt;"));
        assert!(!svg.contains("<2.0>"));
        // Decades 10..10000 labelled; y axis to 50.
        for label in [">10<", ">100<", ">1000<", ">10000<", ">50<"] {
            assert!(svg.contains(label), "missing {label}");
        }
        // N = 10000 sits on the right edge; y = 40 of 50 is 4/5 up the 300 px plot.
        assert!(svg.contains(r#"cx="620.0" cy="100.0""#), "{svg}");
        assert!(svg.contains(r#"cx="620.0" cy="232.0""#), "{svg}");
    }

    #[test]
    fn points_are_sorted_by_x_in_the_line() {
        let svg = plot("t", "N", "ms", &two_series());
        let line = svg
            .lines()
            .find(|l| l.contains("#d62728") && l.contains("polyline"))
            .unwrap();
        let first_x: f64 = line
            .split('"')
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((first_x - 70.0 - (50f64.log10() - 1.0) / 3.0 * 550.0).abs() < 0.1);
    }
}
