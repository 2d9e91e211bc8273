"""The default URL source connects where the policy planned."""

from unbroken.client.policy import NextTry
from unbroken.client.urls import ListedUrls
from unbroken.protocol.states import Kind


async def test_listed_urls_answer_the_planned_url():
    plan = NextTry(0.0, "http://b", 1)
    assert await ListedUrls().next_url("cam", Kind.PLAY, plan) == "http://b"
