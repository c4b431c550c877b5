"""Helpers the tests share: rows written through the ORM (`factories`), mail to seed and read
(`mail`, `imap`), Cyrus and Courier from Debian's packages (`other_servers`), the worker in a
thread or a process (`worker`, `worker_process`), the web UI over HTTP and in a browser (`web`,
`browser`), outbound mail (`outbound`), the IMAP-mapping scene (`mapping`), quoted HTML from
real mail clients (`quoted_html`) and the shared mail corpus (`corpus`). Fixtures stay in the
conftest files; test modules import helpers from here only, never from each other."""
