"""The read side: the gRPC Query service and the HTTP/JSON API, both over ``queries``."""
