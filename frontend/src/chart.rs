//! Small SVG line charts of `/api/v1/stats/history`, following the live
//! feed: one fetch of the last [`WINDOW_S`] seconds, then each `stats`
//! event's `history` (the newest second) is appended. No JS library.
//!
//! Invariants:
//! - a chart keeps at most [`WINDOW_S`] + 1 points per line (older ones are
//!   dropped as new seconds arrive), keyed by second so the fetch and the
//!   feed never double a point;
//! - a line sums every series that matches it (e.g. `produce` of all
//!   topics for the node's produce rate);
//! - the `<svg>` carries `data-series` (the lines' kinds, space-separated)
//!   and `data-last` (their newest values, same order; empty before any
//!   data), and each line's `<polyline>` its own `data-series`/`data-last`;
//! - the drawing scales to its box (viewBox, width 100%): it fits a phone.
//!
//! The SVG is built as text (every label escaped) and set as the figure's
//! inner HTML, so no SVG element support is needed from the view macro.

use std::collections::BTreeMap;
use std::fmt::Write;

use leptos::prelude::*;
use serde_json::Value;

use crate::api::{self, arr, enc, s};
use crate::live::use_live;

/// Seconds a chart shows.
pub const WINDOW_S: i64 = 600;

/// Drawing size in viewBox units, and the plot's margins.
const W: f64 = 600.0;
const H: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One line of a chart: the series it sums and its legend text.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub kind: &'static str,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub label: String,
}

impl Line {
    pub fn new(kind: &'static str, label: &str) -> Line {
        Line {
            kind,
            topic: None,
            group: None,
            label: label.to_string(),
        }
    }

    pub fn topic(mut self, topic: &str) -> Line {
        self.topic = Some(topic.to_string());
        self
    }

    pub fn group(mut self, group: &str) -> Line {
        self.group = Some(group.to_string());
        self
    }

    /// Whether a series object (`{"kind","topic"?,"group"?}`) belongs to
    /// this line.
    fn matches(&self, series: &Value) -> bool {
        s(series, "kind") == self.kind
            && self.topic.as_deref().is_none_or(|t| s(series, "topic") == t)
            && self.group.as_deref().is_none_or(|g| s(series, "group") == g)
    }

    fn url(&self, from_ms: i64) -> String {
        let mut u = format!("/api/v1/stats/history?kind={}&from={from_ms}", self.kind);
        if let Some(t) = &self.topic {
            let _ = write!(u, "&topic={}", enc(t));
        }
        if let Some(g) = &self.group {
            let _ = write!(u, "&group={}", enc(g));
        }
        u
    }
}

/// Points of one line: second (ms) → value.
type Points = BTreeMap<i64, f64>;

/// Adds `value` at `at_ms` (floored to the second), keeping the window.
fn put(points: &mut Points, at_ms: i64, value: f64) {
    let at = at_ms.div_euclid(1000) * 1000;
    points.insert(at, value);
    if let Some(newest) = points.keys().next_back().copied() {
        let oldest = newest - WINDOW_S * 1000;
        while points.first_key_value().is_some_and(|(k, _)| *k < oldest) {
            points.pop_first();
        }
    }
}

/// A history answer's matching series summed per point.
fn sum_answer(line: &Line, answer: &Value) -> Points {
    let mut out = Points::new();
    for series in arr(answer, "series").iter().filter(|x| line.matches(x)) {
        for p in arr(series, "points") {
            if let (Some(at), Some(v)) = (p.get(0).and_then(Value::as_i64), p.get(1).and_then(Value::as_f64)) {
                *out.entry(at).or_default() += v;
            }
        }
    }
    out
}

/// A live `history` sample's matching values summed, or `None` without any.
fn sum_sample(line: &Line, sample: &Value) -> Option<(i64, f64)> {
    let at = sample.get("at_ms").and_then(Value::as_i64)?;
    let v = arr(sample, "series")
        .iter()
        .filter(|x| line.matches(x))
        .filter_map(|x| x.get("value").and_then(Value::as_f64))
        // From +0 (an empty `sum` of floats is -0, which would show "-0").
        .fold(0.0, |a, b| a + b);
    Some((at, v))
}

/// `&`, `<`, `>`, `"` escaped for SVG text and attributes.
fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value as a short label: `12`, `3.5`, `12.3k`, `4.1M`.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a == a.trunc() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A round upper bound for the y axis (1, 2 or 5 × 10ⁿ), at least 1.
fn nice_max(max: f64) -> f64 {
    if max <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= max)
        .unwrap_or(10.0 * p)
}

/// The SVG text of a chart.
fn svg(title_id: &str, unit: &str, lines: &[Line], points: &[Points]) -> String {
    let newest = points.iter().filter_map(|p| p.keys().next_back().copied()).max();
    let end = newest.unwrap_or(0);
    let start = end - WINDOW_S * 1000;
    let max = nice_max(points.iter().flat_map(|p| p.values().copied()).fold(0.0, f64::max));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |at: i64| LEFT + pw * ((at - start) as f64 / (WINDOW_S * 1000) as f64).clamp(0.0, 1.0);
    let y = |v: f64| TOP + ph * (1.0 - (v / max).clamp(0.0, 1.0));
    let kinds: Vec<&str> = lines.iter().map(|l| l.kind).collect();
    let lasts: Vec<String> = points
        .iter()
        .filter_map(|p| p.values().next_back().map(|v| v.to_string()))
        .collect();
    let last = if lasts.len() == lines.len() {
        lasts.join(" ")
    } else {
        String::new()
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-labelledby="{id}" data-series="{series}" data-last="{last}" xmlns="http://www.w3.org/2000/svg">"#,
        id = esc(title_id),
        series = esc(&kinds.join(" ")),
    );
    // Axes, the y range and the time span.
    let _ = write!(
        out,
        r#"<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/><line class="axis" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/>"#,
        b = TOP + ph,
        r = W - RIGHT,
    );
    let _ = write!(
        out,
        r#"<line class="grid" x1="{LEFT}" y1="{mid}" x2="{r}" y2="{mid}"/>"#,
        mid = TOP + ph / 2.0,
        r = W - RIGHT,
    );
    let _ = write!(
        out,
        r#"<text class="tick" x="{tx}" y="{ty}" text-anchor="end">{top}</text><text class="tick" x="{tx}" y="{by}" text-anchor="end">0</text>"#,
        tx = LEFT - 6.0,
        ty = TOP + 10.0,
        by = TOP + ph,
        top = esc(&format!("{} {unit}", short(max))),
    );
    let _ = write!(
        out,
        r#"<text class="tick" x="{LEFT}" y="{ly}">−{m} min</text><text class="tick" x="{r}" y="{ly}" text-anchor="end">now</text>"#,
        ly = H - 8.0,
        m = WINDOW_S / 60,
        r = W - RIGHT,
    );
    for (i, (line, pts)) in lines.iter().zip(points).enumerate() {
        let coords: Vec<String> = pts
            .iter()
            .filter(|(at, _)| **at >= start)
            .map(|(at, v)| format!("{:.1},{:.1}", x(*at), y(*v)))
            .collect();
        let last = pts.values().next_back().map(|v| v.to_string()).unwrap_or_default();
        let _ = write!(
            out,
            r#"<polyline class="l{i}" fill="none" data-series="{k}" data-last="{last}" points="{c}"><title>{label}</title></polyline>"#,
            k = line.kind,
            c = coords.join(" "),
            label = esc(&line.label),
        );
    }
    out.push_str("</svg>");
    out
}

/// One chart: a title, a legend with each line's newest value, and the
/// drawing. `unit` labels the y axis (`/s`, `ms`, `B`).
#[component]
pub fn Chart(title: String, unit: &'static str, lines: Vec<Line>) -> impl IntoView {
    let live = use_live();
    let points = RwSignal::new(vec![Points::new(); lines.len()]);
    let error = RwSignal::new(None::<String>);
    let from_ms = js_sys::Date::now() as i64 - WINDOW_S * 1000;
    for (i, line) in lines.iter().enumerate() {
        let line = line.clone();
        leptos::task::spawn_local(async move {
            match api::get(&line.url(from_ms)).await {
                Ok(v) => {
                    let fetched = sum_answer(&line, &v);
                    // Merge: feed samples that came in meanwhile stay.
                    let _ = points.try_update(|p| {
                        if let Some(cur) = p.get_mut(i) {
                            for (at, v) in fetched {
                                cur.entry(at).or_insert(v);
                            }
                        }
                    });
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    }
    let feed_lines = lines.clone();
    Effect::new(move |_| {
        let Some(sample) = live
            .stats
            .with(|st| st.as_ref().and_then(|v| v.get("history").cloned()))
        else {
            return;
        };
        points.update(|p| {
            for (line, pts) in feed_lines.iter().zip(p.iter_mut()) {
                if let Some((at, v)) = sum_sample(line, &sample) {
                    put(pts, at, v);
                }
            }
        });
    });
    let id = format!(
        "chart-{}",
        title.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    let (svg_id, svg_lines) = (id.clone(), lines.clone());
    let drawing = move || points.with(|p| svg(&svg_id, unit, &svg_lines, p));
    let legend = move || {
        let p = points.get();
        lines
            .iter()
            .zip(p)
            .enumerate()
            .map(|(i, (l, pts))| {
                let last = pts.values().next_back().map(|v| format!("{} {unit}", short(*v)));
                view! {
                    <li><span class=format!("swatch l{i}") aria-hidden="true"></span>
                        {l.label.clone()} ": " <b>{last.unwrap_or_else(|| "–".into())}</b></li>
                }
            })
            .collect_view()
    };
    view! {
        <figure class="chart">
            <figcaption id=id.clone()>{title.clone()}</figcaption>
            <div class="plot" inner_html=drawing></div>
            <ul class="legend">{legend}</ul>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        </figure>
    }
}

/// A [`Chart`] from plain values.
fn chart(title: String, unit: &'static str, lines: Vec<Line>) -> impl IntoView {
    view! { <Chart title=title unit=unit lines=lines/> }
}

/// The overview's charts: produce and consume rates, retry and DLQ inflow,
/// fsync latency, unflushed bytes.
#[component]
pub fn OverviewCharts() -> impl IntoView {
    let rates = vec![Line::new("produce", "produced"), Line::new("consume", "consumed")];
    let inflow = vec![Line::new("retry", "retries"), Line::new("dlq", "dead letters")];
    view! {
        <div class="charts">
            {chart("Produce and consume".into(), "/s", rates)}
            {chart("Retry and DLQ inflow".into(), "/s", inflow)}
            {chart("Fsync latency".into(), "ms", vec![Line::new("fsync_ms", "mean fsync")])}
            {chart("Unflushed bytes".into(), "B", vec![Line::new("unflushed_bytes", "not fsynced")])}
        </div>
    }
}

/// Produce and consume rates of one topic (for the topic page).
#[component]
pub fn TopicCharts(topic: String) -> impl IntoView {
    let lines = vec![
        Line::new("produce", "produced").topic(&topic),
        Line::new("consume", "consumed").topic(&topic),
    ];
    view! { <div class="charts">{chart(format!("Topic {topic}: produce and consume"), "/s", lines)}</div> }
}

/// One group's lag over time (for `/consumers`).
#[component]
pub fn GroupLag(group: String) -> impl IntoView {
    chart(
        format!("Lag of {group}"),
        "msgs",
        vec![Line::new("lag", "lag").group(&group)],
    )
}
