-- Kong plugin nbffi-echo: its per-route configuration.
return {
    name = "nbffi-echo",
    fields = {
        { config = {
            type = "record",
            fields = {
                { method = { type = "string", default = "upper" } },
                { timeout = { type = "number", default = 1, gt = 0 } },
            },
        } },
    },
}
