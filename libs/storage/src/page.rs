//! Keyset pagination: one page of items and the cursor where the next one starts.

use uuid::Uuid;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// The id after which the next page starts, if there is one.
    pub next_after: Option<Uuid>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched items: the extra item only says that
    /// another page exists, and `id` names the cursor of the last item kept.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> Self {
        let limit = limit as usize;
        let next_after = if items.len() > limit {
            items.truncate(limit);
            items.last().map(id)
        } else {
            None
        };
        Self { items, next_after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_item_means_another_page() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = Page::from_overfetch(ids.clone(), 2, |id| *id);
        assert_eq!(page.items, ids[..2]);
        assert_eq!(page.next_after, Some(ids[1]));
        let last = Page::from_overfetch(ids[..2].to_vec(), 2, |id| *id);
        assert_eq!(last.next_after, None);
    }
}
