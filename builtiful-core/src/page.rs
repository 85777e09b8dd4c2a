//! Cursor pagination of job lists, as the seed describes it.
//!
//! Pages are newest first. `starting_after` asks for the page after an id (older jobs),
//! `ending_before` for the page before it (newer jobs, still listed newest first); both are
//! exclusive. To learn whether another page exists, ask for one more item than you show.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The query of a list request, before validation. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct PageRequest {
    /// How many items to return, 1 to 100 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Return the items after this id (exclusive): the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_after: Option<Uuid>,
    /// Return the items before this id (exclusive): the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Uuid>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Items older than this id.
    After(Uuid),
    /// Items newer than this id.
    Before(Uuid),
}

impl Cursor {
    /// The id the cursor points at.
    pub const fn id(self) -> Uuid {
        match self {
            Self::After(id) | Self::Before(id) => id,
        }
    }
}

/// A validated [`PageRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// How many items to return, 1 to 100.
    pub limit: u32,
    /// Where the page starts; `None` for the newest items.
    pub cursor: Option<Cursor>,
}

/// Why a [`PageRequest`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// `limit` outside 1..=100.
    #[error("limit must be between 1 and 100, got {0}")]
    LimitOutOfRange(i64),
    /// Both cursors at once.
    #[error("starting_after and ending_before cannot be used together; pass one of them")]
    BothCursors,
}

impl PageRequest {
    /// The page size when none is asked for.
    pub const DEFAULT_LIMIT: u32 = 10;
    /// The largest page size.
    pub const MAX_LIMIT: u32 = 100;

    /// The first page with this many items.
    pub fn first(limit: u32) -> Self {
        Self {
            limit: Some(limit.into()),
            ..Self::default()
        }
    }

    /// Checks the request as the API does.
    pub fn validate(&self) -> Result<Page, PageError> {
        let limit = match self.limit {
            None => Self::DEFAULT_LIMIT,
            Some(limit) => u32::try_from(limit)
                .ok()
                .filter(|n| (1..=Self::MAX_LIMIT).contains(n))
                .ok_or(PageError::LimitOutOfRange(limit))?,
        };
        let cursor = match (self.starting_after, self.ending_before) {
            (Some(_), Some(_)) => return Err(PageError::BothCursors),
            (Some(id), None) => Some(Cursor::After(id)),
            (None, Some(id)) => Some(Cursor::Before(id)),
            (None, None) => None,
        };
        Ok(Page { limit, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            PageRequest::default().validate(),
            Ok(Page {
                limit: 10,
                cursor: None
            })
        );
        assert_eq!(PageRequest::first(1).validate().unwrap().limit, 1);
        assert_eq!(PageRequest::first(100).validate().unwrap().limit, 100);
        for limit in [0, 101, -1, i64::MAX] {
            let request = PageRequest {
                limit: Some(limit),
                ..PageRequest::default()
            };
            assert_eq!(request.validate(), Err(PageError::LimitOutOfRange(limit)));
        }
        assert_eq!(
            PageRequest::first(0).validate().unwrap_err().to_string(),
            "limit must be between 1 and 100, got 0"
        );
    }

    #[test]
    fn one_cursor_at_most() {
        let id = Uuid::now_v7();
        let after = PageRequest {
            starting_after: Some(id),
            ..PageRequest::default()
        };
        assert_eq!(after.validate().unwrap().cursor, Some(Cursor::After(id)));
        let before = PageRequest {
            ending_before: Some(id),
            ..PageRequest::default()
        };
        assert_eq!(before.validate().unwrap().cursor, Some(Cursor::Before(id)));
        let both = PageRequest {
            starting_after: Some(id),
            ending_before: Some(id),
            limit: None,
        };
        assert_eq!(both.validate(), Err(PageError::BothCursors));
    }
}
