//! How values look to a person (tables) and to a script (tab-separated values).

use builtiful_core::{JobStatus, Timestamp};
use comfy_table::{Cell, Color, ContentArrangement, Table, presets};

/// How long ago `then` was, as of `now`: "just now", "3 min ago", "5 h ago", "2 days ago",
/// then the date.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let secs = now.whole_secs_since(then);
    match secs {
        0..60 => "just now".to_owned(),
        60..3_600 => format!("{} min ago", secs / 60),
        3_600..86_400 => format!("{} h ago", secs / 3_600),
        86_400..172_800 => "1 day ago".to_owned(),
        172_800..2_592_000 => format!("{} days ago", secs / 86_400),
        _ => date(then),
    }
}

/// A duration in seconds as "12s", "4m 12s" or "2h 5m".
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3_600, secs % 3_600 / 60),
    }
}

/// RFC 3339 in UTC with whole seconds (`2026-12-04T20:42:59Z`), for scripts.
pub fn rfc3339(time: Timestamp) -> String {
    let secs = i64::try_from(time.secs_since_epoch).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn date(time: Timestamp) -> String {
    rfc3339(time).get(..10).unwrap_or_default().to_owned()
}

/// The last 8 hex digits of an id: the random part of a UUIDv7 (its first digits are a
/// timestamp, shared by jobs queued in the same minute).
pub fn short_id(id: uuid::Uuid) -> String {
    let simple = id.simple().to_string();
    simple[simple.len() - 8..].to_owned()
}

/// The colour a status is shown in.
pub fn status_color(status: JobStatus) -> Color {
    match status {
        JobStatus::Queued => Color::Yellow,
        JobStatus::Provisioning => Color::Cyan,
        JobStatus::Running => Color::Blue,
        JobStatus::Completed => Color::Green,
        JobStatus::Failed => Color::Red,
        JobStatus::Cancelled => Color::DarkGrey,
    }
}

/// A borderless table like `gh`'s: upper-case header, columns fitted to `width` with long cells
/// cut rather than wrapped, so every row stays one line.
pub fn table(header: &[&str], width: Option<u16>, color: bool) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_truncation_indicator("…");
    if color {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    if let Some(width) = width {
        table.set_width(width);
    }
    table.set_header(header.iter().map(|h| {
        let cell = Cell::new(h);
        if color {
            cell.add_attribute(comfy_table::Attribute::Bold)
        } else {
            cell
        }
    }));
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// A cell, coloured when colour is on.
pub fn cell(text: impl Into<String>, color: Option<Color>, enabled: bool) -> Cell {
    let cell = Cell::new(text.into());
    match color {
        Some(c) if enabled => cell.fg(c),
        _ => cell,
    }
}

/// Renders `table` with every row cut to one line.
pub fn render(mut table: Table) -> String {
    for row in table.row_iter_mut() {
        row.max_height(1);
    }
    let text = table.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Escapes text for an HTML page.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = Timestamp::from_secs(1_800_000_000);
        let before = |secs: u64| Timestamp::from_secs(1_800_000_000 - secs);
        assert_eq!(ago(before(5), now), "just now");
        assert_eq!(ago(before(3 * 60 + 59), now), "3 min ago");
        assert_eq!(ago(before(5 * 3_600), now), "5 h ago");
        assert_eq!(ago(before(86_400 + 5), now), "1 day ago");
        assert_eq!(ago(before(3 * 86_400), now), "3 days ago");
        assert_eq!(ago(before(40 * 86_400), now), "2026-12-06");
        // A server clock slightly ahead is not "in the future".
        assert_eq!(ago(Timestamp::from_secs(1_800_000_010), now), "just now");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(252), "4m 12s");
        assert_eq!(duration(3_600 + 5 * 60 + 9), "1h 5m");
    }

    #[test]
    fn timestamps_and_ids_for_scripts() {
        assert_eq!(
            rfc3339(Timestamp {
                secs_since_epoch: 1_730_738_711,
                nanos_since_epoch: 782_944_000
            }),
            "2024-11-04T16:45:11Z"
        );
        let id: uuid::Uuid = "01234567-89ab-7cde-8f01-234567890abc".parse().unwrap();
        assert_eq!(short_id(id), "67890abc");
    }

    #[test]
    fn tables_fit_the_width_and_keep_rows_on_one_line() {
        let mut t = table(&["ID", "REPOSITORY"], Some(30), false);
        t.add_row(vec![
            "abc".to_owned(),
            "octo-org/a-very-long-repository-name-indeed".to_owned(),
        ]);
        let text = render(t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(lines[1].contains('…'), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() <= 30), "{text}");
        assert!(!text.contains('\x1b'));
    }
}
