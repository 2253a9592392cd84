module github.com/switchyard-llm/switchyard/schemas

go 1.26.8
