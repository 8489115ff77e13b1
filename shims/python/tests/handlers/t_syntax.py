def broken(payload)
    return payload
