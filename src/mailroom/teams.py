"""Teams: their sending domains, their members and their suppression list."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from mailroom.clock import Clock
from mailroom.errors import InputError, NotFoundError
from mailroom.i18n import Text
from mailroom.store import schema as t
from mailroom.store.database import new_id


@dataclass(slots=True)
class Team:
    id: int
    name: str
    domains: list[str]
    members: list[str]

    def check_member(self, address: str, field: str = "from") -> None:
        """Refuse a sender who is not a member, saying what to add."""
        address = address.lower()
        if address in self.members:
            return
        domain = address.rpartition("@")[2]
        fix = Text("add the address with `mailroom team add-member`")
        if domain not in self.domains:
            fix = Text(
                "{domain} is not one of the team's sending domains either: add "
                "it with `mailroom team add-domain`, then the address with "
                "`mailroom team add-member`",
                domain=domain,
            )
        problem = Text(
            "{address} is not a member of team {team!r}",
            address=address,
            team=self.name,
        )
        raise InputError(field, problem, fix)


class Teams:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def add(self, name: str, domains: list[str], members: list[str]) -> Team:
        if not name.strip():
            raise InputError("name", Text("is empty"), Text("give the team a name"))
        if self._find_id(name) is not None:
            raise InputError(
                "name",
                Text("team {name!r} exists", name=name),
                Text("choose another name"),
            )
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(t.teams).values(name=name, created_at=self.clock.now())
            )
            team_id = new_id(result)
        self.add_domains(team_id, domains)
        self.add_members(team_id, members)
        return self.get(name)

    def add_domains(self, team_id: int, domains: list[str]) -> None:
        rows = [{"team_id": team_id, "domain": d.lower()} for d in set(domains)]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(t.team_domains), rows)

    def add_members(self, team_id: int, members: list[str]) -> None:
        rows = [{"team_id": team_id, "address": m.lower()} for m in set(members)]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(t.members), rows)

    def get(self, name: str) -> Team:
        team_id = self._find_id(name)
        if team_id is None:
            raise NotFoundError(
                Text("no team named {name!r}; add it with `team add`", name=name)
            )
        return self._load(team_id, name)

    def by_id(self, team_id: int) -> Team:
        with self.engine.connect() as conn:
            name = conn.scalar(select(t.teams.c.name).where(t.teams.c.id == team_id))
        if name is None:
            raise NotFoundError(Text("no team with id {id}", id=team_id))
        return self._load(team_id, name)

    def only(self) -> Team | None:
        """The team, when there is exactly one: commands may then omit --team."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.teams.c.id, t.teams.c.name).limit(2)).all()
        return self._load(rows[0].id, rows[0].name) if len(rows) == 1 else None

    def names(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(select(t.teams.c.name).order_by(t.teams.c.name)))

    def for_sender(self, address: str) -> list[Team]:
        """The teams a From address belongs to: those it is a member of, else
        those with its domain.  One team is an answer; several are not."""
        address = address.lower()
        domain = address.rpartition("@")[2]
        with self.engine.connect() as conn:
            ids = conn.scalars(
                select(t.members.c.team_id).where(t.members.c.address == address)
            ).all()
            if not ids:
                ids = conn.scalars(
                    select(t.team_domains.c.team_id).where(
                        t.team_domains.c.domain == domain
                    )
                ).all()
        return [self.by_id(team_id) for team_id in sorted(set(ids))]

    def suppressed(self, team_id: int) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.scalars(
                    select(t.suppressions.c.address).where(
                        t.suppressions.c.team_id == team_id
                    )
                )
            )

    def unsuppress(self, team_id: int, address: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(t.suppressions)
                .where(t.suppressions.c.team_id == team_id)
                .where(t.suppressions.c.address == address.lower())
            )
        return bool(result.rowcount)

    def _find_id(self, name: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(t.teams.c.id).where(t.teams.c.name == name))

    def _load(self, team_id: int, name: str) -> Team:
        with self.engine.connect() as conn:
            domains = conn.scalars(
                select(t.team_domains.c.domain).where(
                    t.team_domains.c.team_id == team_id
                )
            ).all()
            members = conn.scalars(
                select(t.members.c.address).where(t.members.c.team_id == team_id)
            ).all()
        return Team(team_id, name, sorted(domains), sorted(members))
