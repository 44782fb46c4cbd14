DROP TABLE result_mutation;
