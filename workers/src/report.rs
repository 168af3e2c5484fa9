//! The PDF report of a completed visit, and where reports are stored.
//!
//! [`render`] is deterministic: the same visit gives the same bytes, so the same SHA-256. That is what makes
//! a retried `report.generate` harmless: the visit refuses nothing and records nothing new when the same
//! `sha256` comes back (`RecordReportGenerated` is a no-op then), and the e-mail job can regenerate a lost
//! file and check it against the hash in the event. The document carries no creation date, no random
//! document id and no compression, which is why we write it with `pdf-writer` (every byte ours) rather than
//! a layout crate that stamps the current time and a random id into each file.
//!
//! Text is set in Helvetica, one of the 14 fonts every PDF reader has, with WinAnsi encoding: characters
//! outside Latin-1 print as `?`.

use std::io::Write;
use std::path::{Path, PathBuf};

use domain::Visit;
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use sha2::{Digest, Sha256};

/// A4 in points.
const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 56.0;
const FONT_SIZE: f32 = 11.0;
const LEADING: f32 = 15.0;
/// Characters per line of body text (Helvetica 11 pt averages about 5.5 pt a character).
const LINE_CHARS: usize = 84;

/// The report of `visit` as PDF bytes.
pub fn render(visit: &Visit) -> Vec<u8> {
    let lines = report_lines(visit);
    let per_page = ((PAGE_HEIGHT - 2.0 * MARGIN - 40.0) / LEADING) as usize;
    let pages: Vec<&[Line]> = lines.chunks(per_page.max(1)).collect();

    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let first_page = 6;
    let page_ref = |i: usize| Ref::new(first_page + 2 * i32::try_from(i).unwrap_or(0));
    let content_ref = |i: usize| Ref::new(first_page + 2 * i32::try_from(i).unwrap_or(0) + 1);

    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..pages.len()).map(page_ref))
        .count(i32::try_from(pages.len()).unwrap_or(1));
    pdf.type1_font(font)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr(&format!("Visit report {}", visit.id)))
        .producer(TextStr("trailbook"));

    for (i, page_lines) in pages.iter().enumerate() {
        let mut page = pdf.page(page_ref(i));
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
        page.parent(tree);
        page.contents(content_ref(i));
        let mut resources = page.resources();
        resources
            .fonts()
            .pair(Name(b"F1"), font)
            .pair(Name(b"F2"), bold);
        resources.finish();
        page.finish();

        let mut content = Content::new();
        content.begin_text();
        content.set_font(Name(b"F2"), 16.0);
        content.next_line(MARGIN, PAGE_HEIGHT - MARGIN);
        content.show(Str(&win_ansi("Visit report")));
        content.set_leading(LEADING);
        content.next_line(0.0, -30.0);
        for line in *page_lines {
            let (font, size) = if line.heading {
                (Name(b"F2"), FONT_SIZE)
            } else {
                (Name(b"F1"), FONT_SIZE)
            };
            content.set_font(font, size);
            content.show(Str(&win_ansi(&line.text)));
            content.next_line_using_leading();
        }
        content.end_text();
        content.begin_text();
        content.set_font(Name(b"F1"), 8.0);
        content.next_line(MARGIN, MARGIN / 2.0);
        content.show(Str(&win_ansi(&format!(
            "{} - page {} of {}",
            visit.id,
            i + 1,
            pages.len()
        ))));
        content.end_text();
        pdf.stream(content_ref(i), &content.finish());
    }
    pdf.finish()
}

struct Line {
    text: String,
    heading: bool,
}

fn report_lines(visit: &Visit) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut field = |label: &str, value: String| {
        for (i, part) in wrap(&format!("{label}: {value}"), LINE_CHARS)
            .into_iter()
            .enumerate()
        {
            lines.push(Line {
                text: if i == 0 { part } else { format!("    {part}") },
                heading: false,
            });
        }
    };
    field("Visit", visit.id.clone());
    if let Some(patient) = &visit.patient {
        field("Patient", format!("{} ({})", patient.name, patient.id));
    }
    field("Clinician", visit.clinician.clone());
    if let Some(at) = visit.scheduled_at {
        field("Scheduled", at.format("%Y-%m-%d %H:%M UTC").to_string());
    }
    field("Status", visit.status.to_string());
    let codes = if visit.diagnosis_codes.is_empty() {
        "none".to_owned()
    } else {
        visit.diagnosis_codes.join(", ")
    };
    field("Diagnosis codes", codes);
    lines.push(Line {
        text: String::new(),
        heading: false,
    });
    lines.push(Line {
        text: "Summary".to_owned(),
        heading: true,
    });
    for paragraph in visit.summary.as_deref().unwrap_or("").lines() {
        for part in wrap(paragraph, LINE_CHARS) {
            lines.push(Line {
                text: part,
                heading: false,
            });
        }
    }
    lines
}

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        let needed = current.chars().count() + usize::from(!current.is_empty()) + word.len();
        if needed > width && !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&word);
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

/// `text` in WinAnsi (Latin-1 for what we print); other characters and control characters become `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match u32::from(c) {
            0x20..=0x7e | 0xa0..=0xff => u8::try_from(u32::from(c)).unwrap_or(b'?'),
            _ => b'?',
        })
        .collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where generated reports live: files under `<data dir>/reports`, named by document id.
#[derive(Debug, Clone)]
pub struct DocumentStore {
    dir: PathBuf,
}

impl DocumentStore {
    /// Reports under `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The document id of a visit's report: the visit id when it is a safe file name, else its hash.
    pub fn document_id(visit_id: &str) -> String {
        format!("{}.pdf", safe_file_stem(visit_id))
    }

    /// Writes `bytes` as `document_id` atomically (see [`write_atomically`]), so a crash never leaves half
    /// a report under the real name.
    pub async fn put(&self, document_id: &str, bytes: Vec<u8>) -> std::io::Result<()> {
        write_atomically(self.dir.join(document_id), bytes).await
    }

    /// The stored document, or `None` when there is no such file.
    pub async fn get(&self, document_id: &str) -> std::io::Result<Option<Vec<u8>>> {
        if document_id != safe_file_stem(document_id) {
            return Ok(None);
        }
        match tokio::fs::read(self.dir.join(document_id)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (created if missing),
/// synced, then renamed into place. Readers see the old file or the whole new one, never a part.
pub async fn write_atomically(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        let dir = path
            .parent()
            .ok_or_else(|| std::io::Error::other("a file path needs a directory"))?;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::now_v7().simple()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `name` itself when it is 1 to 100 characters of `[A-Za-z0-9._-]` not starting with a dot, else the
/// hex SHA-256 of it (ids are user data; file names must not be).
pub fn safe_file_stem(name: &str) -> String {
    let safe = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if safe {
        name.to_owned()
    } else {
        sha256_hex(name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use domain::values::Email;
    use domain::visit::{Patient, VisitStatus};

    fn visit(summary: &str) -> Visit {
        Visit {
            id: "v-1".to_owned(),
            status: VisitStatus::Completed,
            patient: Some(Patient {
                id: "p-1".to_owned(),
                name: "Grace Hopper".to_owned(),
                email: Email::parse("grace@example.com").unwrap_or_else(|e| panic!("{e}")),
            }),
            clinician: "dr-grey".to_owned(),
            scheduled_at: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).single(),
            summary: Some(summary.to_owned()),
            diagnosis_codes: vec!["J06.9".to_owned()],
            ..Visit::default()
        }
    }

    #[test]
    fn the_same_visit_gives_the_same_bytes_and_a_different_one_does_not() {
        let a = render(&visit("Mild cold. Rest and fluids."));
        let b = render(&visit("Mild cold. Rest and fluids."));
        assert_eq!(sha256_hex(&a), sha256_hex(&b));
        assert!(a.starts_with(b"%PDF-"));
        assert!(a.windows(5).any(|w| w == b"%%EOF"));
        let c = render(&visit("Something else."));
        assert_ne!(sha256_hex(&a), sha256_hex(&c));
    }

    #[test]
    fn long_summaries_flow_onto_more_pages_and_odd_characters_do_not_panic() {
        let long =
            "Lorem ipsum dolor sit amet. ".repeat(400) + "\u{0}\u{1F600} ÄÖÜ ß " + &"x".repeat(300);
        let pdf = render(&visit(&long));
        let count = |needle: &[u8]| pdf.windows(needle.len()).filter(|w| *w == needle).count();
        let pages = count(b"/Type /Page") - count(b"/Type /Pages");
        assert!(pages > 2, "expected several pages, got {pages}");
    }

    #[test]
    fn wrap_respects_the_width_and_keeps_every_word() {
        let text = "a bb ccc dddd eeeee ".repeat(20);
        let lines = wrap(&text, 12);
        assert!(lines.iter().all(|l| l.chars().count() <= 12));
        assert_eq!(
            lines.join(" ").split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
    }

    #[test]
    fn unsafe_ids_become_hashes() {
        assert_eq!(safe_file_stem("v-1"), "v-1");
        assert_eq!(safe_file_stem("../etc/passwd").len(), 64);
        assert_eq!(safe_file_stem(".hidden").len(), 64);
        assert_eq!(DocumentStore::document_id("v-1"), "v-1.pdf");
    }
}
