"""Test support: the one CLI runner, the seeder, the proxies, filesystem helpers and event
factories that the tests share. Nothing here is a test; nothing here is shipped."""
