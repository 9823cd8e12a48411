from pushplat.registry import Route
from pushplat.registry.memory import MemoryRegistry
from tests.helpers import eventually


async def test_register_lookup_replace_and_compare_and_delete():
    r = MemoryRegistry()
    old = Route("d1", "u1", "e1", "s1")
    new = Route("d1", "u1", "e2", "s2")
    assert await r.register(old, 60) is None
    await r.register(Route("d2", "u1", "e1", "s3"), 60)
    assert (await r.lookup_devices(["d1", "nope"])) == {"d1": old}
    assert await r.register(new, 60) == old  # the caller learns which session it replaced
    assert not await r.unregister(old)  # the old session must not remove the newer entry
    assert (await r.lookup_devices(["d1"]))["d1"] == new
    assert sorted(x.device_id for x in (await r.lookup_users(["u1"]))["u1"]) == ["d1", "d2"]
    assert await r.unregister(new)
    assert (await r.lookup_users(["u1"]))["u1"] == [Route("d2", "u1", "e1", "s3")]


async def test_entries_expire_unless_refreshed():
    r = MemoryRegistry()
    a, b = Route("a", "u", "e", "s1"), Route("b", "u", "e", "s2")
    await r.register(a, 0.05)
    await r.register(b, 0.05)
    await r.refresh([a, Route("b", "u", "e", "other-session")], 10)

    async def only_a_left() -> bool:
        return list(await r.lookup_devices(["a", "b"])) == ["a"]

    await eventually(only_a_left, 2, what="b's entry to expire")
    assert list(await r.lookup_devices(["a"])) == ["a"]
    await r.set_edge("e", "127.0.0.1:1", 0.05)
    assert await r.edge_addresses(["e"]) == {"e": "127.0.0.1:1"}

    async def edge_gone() -> bool:
        return await r.edge_addresses(["e"]) == {}

    await eventually(edge_gone, 2, what="the edge address to expire")


async def test_refresh_re_creates_lost_entries_but_never_takes_a_device_back():
    r = MemoryRegistry()
    old, new, lost = Route("a", "u", "e1", "s1"), Route("a", "u", "e2", "s2"), Route("b", "u", "e1", "s3")
    await r.register(old, 10)
    await r.register(new, 10)
    assert await r.refresh([old, lost], 10) == [lost], "as on Redis: what is gone comes back"
    assert await r.lookup_devices(["a", "b"]) == {"a": new, "b": lost}
    assert sorted(x.device_id for x in (await r.lookup_users(["u"]))["u"]) == ["a", "b"]
    assert await r.refresh([new, lost], 10) == []
