//! Request and response types of the AI Flow HTTP API (`/api/v1`).
//!
//! They live apart from the server so the SDK and the CLI reuse them without pulling in the
//! server. Every type derives serde and utoipa's `ToSchema`, so the OpenAPI document and the
//! wire format cannot drift apart.

pub mod auth;
pub mod backoff;
pub mod error;
pub mod event;
pub mod meta;
pub mod page;
pub mod scheduler;

pub use error::{ApiError, ErrorBody};
pub use event::{Event, EventFilter, NewEvent, Offset};
pub use page::{Page, PageQuery};

#[cfg(feature = "server")]
pub mod server;

/// Characters no name may hold because they are invisible or change how the text around them
/// is shown, so two different names could look alike: bidirectional controls (U+061C,
/// U+200E–U+200F, U+202A–U+202E, U+2066–U+2069), zero-width and joiner characters
/// (U+200B–U+200D, U+2060–U+2064, U+FEFF), the soft hyphen (U+00AD), U+034F, U+115F, U+1160,
/// U+17B4, U+17B5, U+180E, U+3164, U+FFA0, variation selectors (U+FE00–U+FE0F, U+E0100–U+E01EF),
/// tag characters (U+E0000–U+E007F), and every control character.
#[must_use]
pub fn is_deceptive_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{e0000}'..='\u{e007f}'
                | '\u{e0100}'..='\u{e01ef}'
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn look_alike_characters_are_deceptive() {
        for c in [
            '\u{202e}',
            '\u{200b}',
            '\u{feff}',
            '\u{2066}',
            '\u{1b}',
            '\u{e0041}',
        ] {
            assert!(super::is_deceptive_char(c), "{c:?}");
        }
        for c in ['a', 'é', '模', '-', ' ', '€'] {
            assert!(!super::is_deceptive_char(c), "{c:?}");
        }
    }
}
