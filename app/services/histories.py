"""Histories: create, read, update, delete, and hid allocation."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.ids import IdEncoder
from app.models import Dataset, DatasetState, History, User
from app.models.collections import DatasetCollection, HistoryDatasetCollection
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


@dataclass
class ContentsTally:
    """Galaxy's counts of a history's contents, datasets and collections together."""

    active: dict[str, int] = field(default_factory=lambda: {"active": 0, "deleted": 0, "hidden": 0})
    states: dict[str, int] = field(default_factory=dict)  # visible, undeleted contents by state
    size: int = 0  # bytes of the datasets not purged (Galaxy's disk_size)


def contents_tally(session: Session, history_id: int) -> ContentsTally:
    """Count a history's datasets and collections in one aggregate query (no row per item).

    As Galaxy's contents_active, deleted and hidden overlap (an item both deleted and
    hidden counts in each) and active is visible and not deleted; a collection's state
    is its populated_state.
    """
    datasets = sa.select(
        Dataset.state.label("state"), Dataset.deleted.label("deleted"), Dataset.visible.label("visible"),
        sa.case((Dataset.purged.is_(False), Dataset.file_size), else_=0).label("size"),
    ).where(Dataset.history_id == history_id)
    collections = sa.select(
        DatasetCollection.populated_state, HistoryDatasetCollection.deleted, HistoryDatasetCollection.visible,
        sa.cast(sa.literal(0), sa.BigInteger),
    ).join(DatasetCollection, DatasetCollection.id == HistoryDatasetCollection.collection_id).where(
        HistoryDatasetCollection.history_id == history_id)
    contents = sa.union_all(datasets, collections).subquery()
    groups = session.execute(
        sa.select(contents.c.state, contents.c.deleted, contents.c.visible, sa.func.count(),
                  sa.func.sum(contents.c.size))
        .group_by(contents.c.state, contents.c.deleted, contents.c.visible)
    )
    tally = ContentsTally()
    for state, deleted, visible, count, size in groups:
        tally.size += int(size or 0)
        tally.active["deleted"] += count if deleted else 0
        tally.active["hidden"] += 0 if visible else count
        if visible and not deleted:
            tally.active["active"] += count
            tally.states[state] = tally.states.get(state, 0) + count
    return tally


def history_view(session: Session, history: History, ids: IdEncoder) -> HistoryView:
    """The API form of a history, with its state summary and content counts."""
    rows = session.execute(
        sa.select(Dataset.id, Dataset.state)
        .where(Dataset.history_id == history.id, Dataset.deleted.is_(False))
    ).all()
    counts = Counter(state for _, state in rows)
    state_ids: dict[str, list[str]] = defaultdict(list)
    for dataset_id, state in rows:
        state_ids[state].append(ids.encode(dataset_id))
    tally = contents_tally(session, history.id)
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
        count=history.hid_counter - 1,  # as Galaxy: every dataset and collection ever added
        size=tally.size,
        nice_size=nice_size(tally.size),
        contents_active=tally.active,
        contents_states=tally.states,
        hid_counter=history.hid_counter,
        user_id=ids.encode(history.user_id),
        create_time=history.create_time,
        update_time=history.update_time,
    )


def nice_size(size: int) -> str:
    """A size as Galaxy writes it: '100 bytes', '9.8 KB', '95.4 MB'."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    for unit in ("KB", "MB", "GB", "TB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PB"


def summary_state(counts: Counter[str]) -> str:
    """Galaxy's single state of a history: 'new' when empty, else the most pressing state."""
    if not counts:
        return DatasetState.NEW
    for state in _STATE_ORDER:
        if counts.get(state):
            return state
    return DatasetState.OK
