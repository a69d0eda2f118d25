//! The page: one HTML file, one stylesheet and one script, embedded in the
//! binary so that the console works offline and the page's Content Security
//! Policy can forbid every other source.

/// The stylesheet (`/console.css`).
pub(super) const STYLE: &str = include_str!("page/console.css");
/// The script (`/console.js`).
pub(super) const SCRIPT: &str = include_str!("page/console.js");
const HTML: &str = include_str!("page/index.html");

/// The page, telling its script whether the test hooks are on.
pub(super) fn html(test_hooks: bool) -> String {
    HTML.replace("{{TEST_HOOKS}}", if test_hooks { "on" } else { "off" })
}
