//! Keys and prefixes: validated absolute paths like `/cms/topics/orders/0`.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// A validated object key: an absolute path of non-empty segments, none `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<str>);

impl Key {
    /// Validates `key` and wraps it.
    pub fn new(key: &str) -> Result<Key> {
        validate(key, false)?;
        Ok(Key(Arc::from(key)))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when this key lies at or under `prefix` (whole segments only).
    pub fn is_under(&self, prefix: &Prefix) -> bool {
        prefix.covers(&self.0)
    }

    /// The part of the key after `prefix`, without its leading `/` (empty when equal).
    pub fn relative_to<'a>(&'a self, prefix: &Prefix) -> Option<&'a str> {
        if !prefix.covers(&self.0) {
            return None;
        }
        let rest = &self.0[prefix.as_str().len()..];
        Some(rest.strip_prefix('/').unwrap_or(rest))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Key> {
        Key::new(s)
    }
}

/// A validated key prefix: `/` or a path like a key; it covers keys segment by segment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix(Arc<str>);

impl Prefix {
    /// Validates `prefix` (a trailing `/` is dropped) and wraps it.
    pub fn new(prefix: &str) -> Result<Prefix> {
        let trimmed = if prefix.len() > 1 {
            prefix.strip_suffix('/').unwrap_or(prefix)
        } else {
            prefix
        };
        validate(trimmed, true)?;
        Ok(Prefix(Arc::from(trimmed)))
    }

    /// The prefix as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `key` is this prefix or lies under it.
    pub fn covers(&self, key: &str) -> bool {
        if &*self.0 == "/" {
            return key.starts_with('/');
        }
        match key.strip_prefix(&*self.0) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// Number of bytes in the prefix, used to pick the longest match.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True only for the root prefix `/`... never empty otherwise.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Joins a relative path onto this prefix into a key.
    pub fn join(&self, relative: &str) -> Result<Key> {
        if relative.is_empty() {
            return Key::new(&self.0);
        }
        if &*self.0 == "/" {
            Key::new(&format!("/{relative}"))
        } else {
            Key::new(&format!("{}/{relative}", self.0))
        }
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate(path: &str, allow_root: bool) -> Result<()> {
    let fail = |reason| {
        Err(Error::InvalidKey {
            key: path.chars().take(200).collect(),
            reason,
        })
    };
    if path.is_empty() {
        return fail("it is empty");
    }
    if path.len() > MAX_KEY_LEN {
        return fail("it is longer than 1024 bytes");
    }
    if !path.starts_with('/') {
        return fail("it must start with '/'");
    }
    if path == "/" {
        return if allow_root {
            Ok(())
        } else {
            fail("the root '/' is a prefix, not a key")
        };
    }
    if path.chars().any(|c| c.is_control()) {
        return fail("it contains a control character");
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return fail("it has an empty segment ('//' or a trailing '/')"),
            "." | ".." => return fail("'.' and '..' segments are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_keys_are_accepted() {
        for k in ["/a", "/cms/topics/orders/0", "/a.b/c-d/é"] {
            assert_eq!(Key::new(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn invalid_keys_say_why() {
        for (k, why) in [
            ("", "empty"),
            ("a/b", "start with"),
            ("/", "root"),
            ("/a//b", "empty segment"),
            ("/a/", "empty segment"),
            ("/a/../b", "'..'"),
            ("/a/./b", "'.'"),
            ("/a\nb", "control"),
        ] {
            let err = Key::new(k).unwrap_err().to_string();
            assert!(err.contains(why), "{k:?}: {err}");
        }
        assert!(Key::new(&format!("/{}", "x".repeat(MAX_KEY_LEN))).is_err());
    }

    #[test]
    fn prefixes_cover_whole_segments() {
        let p = Prefix::new("/cms/topics/").unwrap();
        assert_eq!(p.as_str(), "/cms/topics");
        assert!(p.covers("/cms/topics"));
        assert!(p.covers("/cms/topics/a/0"));
        assert!(!p.covers("/cms/topicsx/a"));
        assert!(Prefix::new("/").unwrap().covers("/anything"));
        let k = Key::new("/cms/topics/a/0").unwrap();
        assert_eq!(k.relative_to(&p), Some("a/0"));
        assert_eq!(p.join("a/0").unwrap(), k);
    }
}
