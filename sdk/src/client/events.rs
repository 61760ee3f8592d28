//! Typed client of the events routes: `client.events().publish(…)`.

use aiflow_api::event::{EventCount, EventQuery};
use aiflow_api::{Event, EventFilter, NewEvent, Offset, Page};

use super::{Client, Error};

/// The events routes of one server; from [`Client::events`].
#[derive(Debug, Clone, Copy)]
pub struct Events<'a> {
    client: &'a Client,
}

impl Client {
    /// The events routes (`/api/v1/events…`).
    #[must_use]
    pub fn events(&self) -> Events<'_> {
        Events { client: self }
    }
}

impl Events<'_> {
    /// Publishes one event; returns it as stored (with its offset).
    pub async fn publish(&self, event: &NewEvent) -> Result<Event, Error> {
        self.client.post("/events", event).await
    }

    /// Publishes events atomically (all or none), in order.
    pub async fn publish_batch(&self, events: &[NewEvent]) -> Result<Vec<Event>, Error> {
        self.client.post("/events", events).await
    }

    /// One page of stored events matching `query` (`after`/`cursor`, `limit`).
    pub async fn list(&self, query: &EventQuery) -> Result<Page<Event>, Error> {
        self.client.get("/events", query).await
    }

    /// Every stored event matching `filter` with offset > `after`, following the pages.
    pub async fn list_all(&self, filter: &EventFilter, after: Offset) -> Result<Vec<Event>, Error> {
        let mut query = EventQuery::from_filter(filter);
        query.after = Some(after.0);
        query.limit = Some(aiflow_api::page::MAX_LIMIT);
        let mut out = Vec::new();
        loop {
            let page = self.list(&query).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// What the event at `offset` did: executions it started, rules it was evaluated against
    /// and the job attempts that followed (`GET /events/{offset}/trace`).
    pub async fn trace(&self, offset: Offset) -> Result<aiflow_api::scheduler::EventTrace, Error> {
        self.client
            .get(&format!("/events/{}/trace", offset.0), &())
            .await
    }

    /// How many stored events match `query`.
    pub async fn count(&self, query: &EventQuery) -> Result<u64, Error> {
        let answer: EventCount = self.client.get("/events/count", query).await?;
        Ok(answer.count)
    }
}
