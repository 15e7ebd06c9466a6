"""Histories: create, read, update, delete, and hid allocation."""

from __future__ import annotations

from collections import Counter, defaultdict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.ids import IdEncoder
from app.models import Dataset, DatasetState, History, User
from app.schemas.histories import HistoryCreate, HistoryListQuery, HistoryUpdate, HistoryView

# Galaxy's summary state of a history, from the states of its datasets (first match wins).
_STATE_ORDER = (
    DatasetState.ERROR,
    DatasetState.FAILED_METADATA,
    DatasetState.RUNNING,
    DatasetState.SETTING_METADATA,
    DatasetState.QUEUED,
    DatasetState.UPLOAD,
    DatasetState.NEW,
    DatasetState.PAUSED,
)


def create_history(session: Session, user: User, body: HistoryCreate) -> History:
    """Create an empty history for a user."""
    history = History(user_id=user.id, name=body.name)
    session.add(history)
    session.flush()
    return history


def get_history(session: Session, user: User, history_id: int, *, for_update: bool = False) -> History:
    """A history of this user (404 for another user's, as for a missing one)."""
    query = sa.select(History).where(History.id == history_id, History.user_id == user.id)
    if for_update:
        query = query.with_for_update()
    history = session.scalar(query)
    if history is None:
        raise NotFound(f"history {history_id} not found")
    return history


def list_histories(session: Session, user: User, query: HistoryListQuery) -> list[History]:
    """The user's histories, newest first."""
    stmt = (
        sa.select(History)
        .where(History.user_id == user.id, History.deleted.is_(query.deleted))
        .order_by(History.update_time.desc(), History.id.desc())
        .offset(query.offset)
    )
    if query.name:
        stmt = stmt.where(History.name == query.name)
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    return list(session.scalars(stmt))


def update_history(session: Session, history: History, body: HistoryUpdate) -> History:
    """Change the fields given."""
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(history, name, value)
    session.flush()
    return history


def delete_history(session: Session, history: History, *, purge: bool) -> History:
    """Mark a history deleted (and purged: its datasets' files are removed by a task)."""
    history.deleted = True
    if purge:
        history.purged = True
        session.execute(
            sa.update(Dataset)
            .where(Dataset.history_id == history.id)
            .values(deleted=True, purged=True)
        )
    session.flush()
    return history


def allocate_hids(session: Session, history_id: int, count: int) -> int:
    """Reserve ``count`` consecutive hids in a history; return the first.

    One UPDATE … RETURNING, so concurrent uploads into one history never share a hid.
    """
    next_hid = session.execute(
        sa.update(History)
        .where(History.id == history_id)
        .values(hid_counter=History.hid_counter + count)
        .returning(History.hid_counter)
    ).scalar_one()
    return next_hid - count


def history_view(session: Session, history: History, ids: IdEncoder) -> HistoryView:
    """The API form of a history, with its state summary."""
    rows = session.execute(
        sa.select(Dataset.id, Dataset.state, Dataset.file_size)
        .where(Dataset.history_id == history.id, Dataset.deleted.is_(False))
    ).all()
    counts = Counter(state for _, state, _ in rows)
    state_ids: dict[str, list[str]] = defaultdict(list)
    for dataset_id, state, _ in rows:
        state_ids[state].append(ids.encode(dataset_id))
    all_states = [DatasetState.NEW, DatasetState.QUEUED, DatasetState.RUNNING, DatasetState.OK,
                  DatasetState.ERROR, DatasetState.PAUSED, DatasetState.UPLOAD, DatasetState.EMPTY,
                  DatasetState.DISCARDED, DatasetState.FAILED_METADATA, DatasetState.SETTING_METADATA,
                  DatasetState.DEFERRED]
    encoded = ids.encode(history.id)
    return HistoryView(
        id=encoded,
        name=history.name,
        url=f"/api/histories/{encoded}",
        contents_url=f"/api/histories/{encoded}/contents",
        state=summary_state(counts),
        state_details={s: counts.get(s, 0) for s in all_states},
        state_ids={s: state_ids.get(s, []) for s in all_states},
        deleted=history.deleted,
        purged=history.purged,
        published=history.published,
        annotation=history.annotation,
        tags=list(history.tags or []),
        count=len(rows),
        size=sum(size or 0 for _, _, size in rows),
        hid_counter=history.hid_counter,
        user_id=ids.encode(history.user_id),
        create_time=history.create_time,
        update_time=history.update_time,
    )


def summary_state(counts: Counter[str]) -> str:
    """Galaxy's single state of a history: 'new' when empty, else the most pressing state."""
    if not counts:
        return DatasetState.NEW
    for state in _STATE_ORDER:
        if counts.get(state):
            return state
    return DatasetState.OK
